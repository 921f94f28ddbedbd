"""`just demo` keeps working: the demo script runs its four cases and exits 0."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_every_case_as_expected() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "demo: every case ended as expected" in out
    for label in (
        "(a) seed format",
        "(b) crashing firmware",
        "(c) malformed document",
        "(d) both at once",
    ):
        assert label in out
    assert "Traceback" not in out
