"""What the command-line tests share: the programs as ``python -m`` argument lists, the
exit code for bad input, the bad-input rows' shape and setup steps, and :func:`run`, which runs
one command line as a process the way a shell does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S: Final = 30.0  # a bound on a hang, not a wait: every row ends in well under 1 s
EXIT_ERROR: Final = 2

BRIDGE: Final = ("-m", "host_bridge.cli")
JOBS: Final = ("-m", "localjobs.cli")
BOOT: Final = ("-m", "bootloader.sim.cli")
VMCU: Final = ("-m", "bootloader.sim.vmcu")
FAULTLINK: Final = ("-m", "tools.faultlink")
BUNDLE: Final = ("-m", "tools.mcu_bundle")
RELIABILITY: Final = ("-m", "reliability")
OVERLAY: Final = ("-m", "bootloader.overlay")

NO_TTY: Final = "{d}/no-such-tty"  # a serial port that does not exist
PORT: Final = ("--port", NO_TTY, "--timeout", "0.2")
SERVE: Final = (*BRIDGE, "jobs", "serve", "--broker", "127.0.0.1:1", "--http-port", "0")
UPLOAD_RAW: Final = (*BRIDGE, "upload", "{d}/file", "--version", "1.0.0", "--board", "tiny")
CREATE: Final = (*BRIDGE, "jobs", "create", "--thing", "t")
VM: Final = (*VMCU, "--board", "tiny", "--flash", "{d}/f.bin", "--link", "{d}/tty")


def bridge_toml(
    state_dir: str, broker: str = "insecure_plaintext = true", extra: str = ""
) -> Callable[[Path], None]:
    """A setup step writing ``{d}/bridge.toml``: a broker nobody listens on, one device."""

    def write(d: Path) -> None:
        (d / "bridge.toml").write_text(
            f'state_dir = "{state_dir.format(d=d)}"\n'
            f'[broker]\nhost = "127.0.0.1"\nport = 1\n{broker.format(d=d)}\n'
            f'[[device]]\nthing = "sensor-01"\nport = "{NO_TTY.format(d=d)}"\n'
            f"{extra.format(d=d)}\n"
        )

    return write


def state_db_is_a_directory(d: Path) -> None:
    (d / "state" / "bridge.sqlite").mkdir(parents=True)


def state_db_is_garbage(d: Path) -> None:
    (d / "state").mkdir()
    (d / "state" / "bridge.sqlite").write_text("not a database\n")


def both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def run(d: Path) -> None:
        for step in steps:
            step(d)

    return run


@dataclass(frozen=True)
class Row:
    id: str
    argv: tuple[str, ...]  # after the interpreter; "{d}" is the scratch directory
    names: tuple[str, ...]  # what the error line must quote ("{d}" substituted)
    code: int = EXIT_ERROR
    setup: Callable[[Path], None] | None = None


def run(argv: tuple[str, ...], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_STATE_HOME=str(home), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=cwd,
        env=env,
        check=False,
    )
