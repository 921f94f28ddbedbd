"""Peak memory (VmHWM) of a process running this project's upload.

A 256 KiB and a 16 MiB image (bench16m board, raw framing, unthrottled), each uploaded by a
child process that reads its own VmHWM.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import (
    IMAGE_SIZE,
    KIB,
    MIB,
    REPO,
    Paths,
    Report,
    Vmcu,
    fmt_kib,
    fmt_rate,
    image_of_size,
    log,
    md_table,
    repo_env,
)
from bootloader.formats.layout import load_board

BIG_IMAGE_SIZE = 16 * MIB

MEMORY_CHILD = r"""
import json, sys, time
from pathlib import Path

def hwm_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink
from host_bridge.smp.image_file import ImageFile
from host_bridge.smp.upload import upload

link, framing, image_path = sys.argv[1], sys.argv[2], sys.argv[3]
client = SmpClient(SerialLink(link, 115200, framing), timeout_s=5.0)
client.link.open()
client.params()
before = hwm_kib()
image = ImageFile(image_path)  # read chunk by chunk, never whole
loaded = hwm_kib()
r = upload(client, image)
client.link.close()
print(json.dumps({"before_kib": before, "loaded_kib": loaded, "peak_kib": hwm_kib(),
                  "size": r.size, "seconds": r.seconds, "match": r.match}))
"""


def bench_memory(tmp: Path, report: Report, paths: Paths) -> str:
    layout = load_board("bench16m")
    v1 = tmp / "bench16m-v1.img"
    v1.write_bytes(image_of_size(8 * KIB, "1.0.0", layout, "bench-v1"))
    sizes = [IMAGE_SIZE, BIG_IMAGE_SIZE]
    rows = []
    peaks: dict[int, int] = {}
    vm = Vmcu(tmp, "mem-raw", "bench16m", ["--framing", "raw"], v1)
    report.command(paths.show(vm.cmd))
    env = repo_env()
    with vm:
        for size in sizes:
            log(f"memory: {size // KIB} KiB image")
            img_path = tmp / f"bench16m-{size // KIB}k.img"
            img_path.write_bytes(image_of_size(size, "2.0.0", layout, f"mem-{size}"))
            cmd = [sys.executable, "-c", MEMORY_CHILD, str(vm.link), "raw", str(img_path)]
            report.command(
                paths.show([sys.executable, "-c", "<bench/memory.py MEMORY_CHILD>", *cmd[3:]])
            )
            proc = subprocess.run(
                cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
            )
            img_path.unlink()
            if proc.returncode:
                report.note(f"memory run for {size} bytes failed: {proc.stderr.strip()[-400:]}")
                rows.append([f"{size:,}", "failed", "", "", "", ""])
                continue
            res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
            peaks[size] = res["peak_kib"]
            rows.append(
                [
                    f"{size:,}",
                    fmt_kib(res["before_kib"]),
                    fmt_kib(res["loaded_kib"]),
                    fmt_kib(res["peak_kib"]),
                    f"{res['seconds']:.2f} s ({fmt_rate(size / res['seconds'])})",
                    str(res["match"]),
                ]
            )
    header = [
        "image bytes",
        "VmHWM before the image is read",
        "VmHWM after reading it",
        "VmHWM after the upload",
        "upload",
        "match",
    ]
    text = [
        "## 2. Peak memory of our upload (bench16m, raw framing, unthrottled)",
        "",
        md_table(header, rows),
        "",
    ]
    if len(peaks) == 2:
        growth = peaks[BIG_IMAGE_SIZE] - peaks[IMAGE_SIZE]
        text.append(
            f"Peak growth from 256 KiB to 16 MiB: **{fmt_kib(growth)}** "
            f"(target < 4 MiB). The image is streamed from its file (`ImageFile`), "
            f"so the upload's memory does not grow with the image."
        )
        text.append("")
    text.append(
        "Each upload runs in a child process (a fresh interpreter) that reads its own "
        "`VmHWM` from `/proc/self/status`: once connected, once the image file is opened "
        "(`ImageFile`, read chunk by chunk), and after `upload()` returns."
    )
    return "\n".join(text)
