"""A ``fota-vmcu`` process for tests: a virtual MCU on a pty, started, watched and stopped.

    with Vmcu(tmp_path, "tiny", load=v1_image) as vm:
        ...  # talk SMP to vm.link (a pty slave), e.g. with smpclient
        vm.wait_for_log(r"boot 2: swap type test")
        vm.restart()  # SIGTERM, then start again on the same flash file

Every wait is bounded: readiness (the pty link exists and the "boot 1:" line was logged),
log lines (read by the process's :class:`harness.procs.Proc` and waited on with a condition,
never by sleeping), and the exit on SIGTERM, which must be a clean 0.
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from harness.procs import PY, Proc, ProcError

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
    The process and its log are a :class:`harness.procs.Proc`.
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
        self._proc = Proc(name, [], directory)
        self._stopped = False  # the last process was stopped by us, not by itself

    @property
    def starts(self) -> int:
        return self._proc.starts

    # -- process control ---------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [PY, "-m", "bootloader.sim.vmcu", "--board", self.board]
        cmd += ["--flash", str(self.flash), "--link", str(self.link), *self.args]
        if self.starts == 0 and self._load is not None:
            cmd += ["--load", str(self._load)]
        return cmd

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start the process and wait until it has booted and its pty link exists."""
        if self.running:
            raise VmcuError("fota-vmcu is already running")
        self._proc.cmd = self.command()
        self._stopped = False
        try:
            self._proc.start()
        except OSError as exc:
            raise VmcuError(f"fota-vmcu did not start: {exc}") from exc
        try:
            self.wait_for_log(r"boot 1:", timeout_s)
            if not self.link.is_symlink():
                raise VmcuError(f"booted but {self.link} is missing\n{self.log_text()}")
        except VmcuError:
            if self.running:
                self._stop(signal.SIGKILL, EXIT_TIMEOUT_S)
            raise

    @property
    def running(self) -> bool:
        return self._proc.running

    @property
    def returncode(self) -> int | None:
        """The exit status of the last process (None while it runs or before it started)."""
        return self._proc.returncode

    @property
    def pid(self) -> int:
        if not self._proc.started:
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

    def _stop(self, sig: signal.Signals, timeout_s: float) -> int | None:
        if not self._proc.started:
            raise VmcuError("fota-vmcu was never started")
        if self.running:
            self._stopped = True
        try:
            return self._proc.signal(sig, timeout_s, must_exit=True)
        except ProcError as exc:
            raise VmcuError(f"{exc}\n{self.log_text()}") from None

    def close(self) -> None:
        """Stop the process: SIGTERM, and it must exit 0; it must not have died on its own."""
        if not self._proc.started:
            return
        if self.running:
            self.terminate()
            return
        self._proc.signal(signal.SIGTERM, EXIT_TIMEOUT_S)  # gone already: collects its log
        if not self._stopped:
            raise VmcuError(
                f"fota-vmcu exited by itself with {self._proc.returncode}\n{self.log_text()}"
            )

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
        """Every output line of every start so far."""
        return self._proc.lines()

    def log_text(self) -> str:
        return "--- fota-vmcu log ---\n" + "\n".join(self.lines)

    def mark(self) -> int:
        """A position in the log, for ``wait_for_log(..., since=mark)``."""
        return self._proc.mark()

    def wait_for_log(
        self, pattern: str, timeout_s: float = LOG_TIMEOUT_S, since: int | None = None
    ) -> re.Match[str]:
        """The first line matching ``pattern`` (re.search) logged since ``since``.

        ``since`` defaults to the running process's first line. Waits at most
        ``timeout_s``, and no longer once the process has exited.
        """
        try:
            return self._proc.wait_for(pattern, timeout_s, since)
        except ProcError as exc:
            first = str(exc).splitlines()[0].replace(self._proc.name, "fota-vmcu", 1)
            raise VmcuError(f"{first}\n{self.log_text()}") from None
