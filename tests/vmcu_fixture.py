"""A ``fota-vmcu`` process for tests: a virtual MCU on a pty, started, watched and stopped.

    with Vmcu(tmp_path, "tiny", load=v1_image) as vm:
        ...  # talk SMP to vm.link (a pty slave), e.g. with smpclient
        vm.wait_for_log(r"boot 2: swap type test")
        vm.restart()  # SIGTERM, then start again on the same flash file

Every wait is bounded: readiness (the pty link exists and the "boot 1:" line was logged),
log lines (read from the process's stderr by a thread and waited on with a condition, never
by sleeping), and the exit on SIGTERM, which must be a clean 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S: Final = 10.0
EXIT_TIMEOUT_S: Final = 5.0
LOG_TIMEOUT_S: Final = 5.0


class VmcuError(AssertionError):
    """The virtual MCU did not do what the test waited for; the message ends with its log."""


class Vmcu:
    """One virtual MCU: a flash file and a pty link in ``directory``, and its process.

    ``load`` (an image's bytes or a path) is programmed into the primary slot on the first
    start only; later starts boot whatever the flash holds.  ``args`` are extra
    ``fota-vmcu`` options (``["--framing", "raw"]``, ``["--baud", "115200"]``, ...).
    """

    def __init__(
        self,
        directory: Path,
        board: str = "tiny",
        *,
        load: bytes | Path | None = None,
        args: Sequence[str] = (),
        name: str = "vmcu",
    ) -> None:
        self.directory = directory
        self.board = board
        self.flash = directory / f"{name}-flash.bin"
        self.link = directory / f"{name}-tty"
        self.args = list(args)
        self._load: Path | None = None
        if isinstance(load, bytes):
            self._load = directory / f"{name}-load.img"
            self._load.write_bytes(load)
        elif load is not None:
            self._load = Path(load)
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._lines: list[str] = []
        self._start_index = 0  # where the running process's lines begin in _lines
        self._eof = True
        self._stopped = False  # the last process was stopped by us, not by itself
        self.starts = 0

    # -- process control ---------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "bootloader.sim.vmcu", "--board", self.board]
        cmd += ["--flash", str(self.flash), "--link", str(self.link), *self.args]
        if self.starts == 0 and self._load is not None:
            cmd += ["--load", str(self._load)]
        return cmd

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start the process and wait until it has booted and its pty link exists."""
        if self.running:
            raise VmcuError("fota-vmcu is already running")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        cmd = self.command()
        with self._cond:
            self._start_index = len(self._lines)
            self._eof = False
        self._stopped = False
        self._proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.starts += 1
        assert self._proc.stderr is not None
        self._reader = threading.Thread(
            target=self._read_log, args=(self._proc.stderr,), daemon=True
        )
        self._reader.start()
        try:
            self.wait_for_log(r"boot 1:", timeout_s)
            if not self.link.is_symlink():
                raise VmcuError(f"booted but {self.link} is missing\n{self.log_text()}")
        except VmcuError:
            if self.running:
                self._stop(signal.SIGKILL, EXIT_TIMEOUT_S)
            raise

    def _read_log(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        stream.close()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise VmcuError("fota-vmcu was never started")
        return self._proc.pid

    def terminate(self, timeout_s: float = EXIT_TIMEOUT_S) -> None:
        """SIGTERM; the process must exit with status 0 within ``timeout_s``."""
        rc = self._stop(signal.SIGTERM, timeout_s)
        if rc != 0:
            raise VmcuError(f"fota-vmcu exited with {rc} on SIGTERM\n{self.log_text()}")

    def kill(self, timeout_s: float = EXIT_TIMEOUT_S) -> None:
        """SIGKILL: a power cut for the MCU (its flash file keeps what was written)."""
        self._stop(signal.SIGKILL, timeout_s)

    def restart(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """A clean stop (SIGTERM, exit 0), then a new start on the same flash file."""
        if self.running:
            self.terminate()
        self.start(timeout_s)

    def _stop(self, sig: signal.Signals, timeout_s: float) -> int:
        proc = self._proc
        if proc is None:
            raise VmcuError("fota-vmcu was never started")
        if proc.poll() is None:
            proc.send_signal(sig)
            self._stopped = True
        try:
            rc = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
            raise VmcuError(
                f"fota-vmcu did not exit within {timeout_s} s of {sig.name}\n{self.log_text()}"
            ) from None
        if self._reader is not None:
            self._reader.join(timeout_s)
        return rc

    def close(self) -> None:
        """Stop the process: SIGTERM, and it must exit 0; it must not have died on its own."""
        proc = self._proc
        if proc is None:
            return
        if self.running:
            self.terminate()
            return
        if self._reader is not None:
            self._reader.join(EXIT_TIMEOUT_S)
        if not self._stopped:
            raise VmcuError(f"fota-vmcu exited by itself with {proc.returncode}\n{self.log_text()}")

    def __enter__(self) -> Vmcu:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # The test failed already: stop the process without masking that failure.
        with contextlib.suppress(VmcuError):
            self.close()

    # -- log ---------------------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        """Every stderr line of every start so far."""
        with self._cond:
            return list(self._lines)

    def log_text(self) -> str:
        return "--- fota-vmcu log ---\n" + "\n".join(self.lines)

    def mark(self) -> int:
        """A position in the log, for ``wait_for_log(..., since=mark)``."""
        with self._cond:
            return len(self._lines)

    def wait_for_log(
        self, pattern: str, timeout_s: float = LOG_TIMEOUT_S, since: int | None = None
    ) -> re.Match[str]:
        """The first line matching ``pattern`` (re.search) logged since ``since``.

        ``since`` defaults to the running process's first line. Waits at most
        ``timeout_s``, and no longer once the process has exited.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            pos = self._start_index if since is None else since
            while True:
                while pos < len(self._lines):
                    match = regex.search(self._lines[pos])
                    if match is not None:
                        return match
                    pos += 1
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
        why = "exited" if self._eof else f"logged nothing matching within {timeout_s} s"
        raise VmcuError(f"fota-vmcu {why}: waiting for /{pattern}/\n{self.log_text()}")
