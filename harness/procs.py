"""Child processes for the campaigns: started, watched through their logs, stopped.

Every wait is bounded; logs are read by a thread and waited on with a condition.  Only
processes started here are signalled, each by its own pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Final

EXIT_TIMEOUT_S: Final = 10.0

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
PY: Final = sys.executable  # children run under this interpreter, in this virtualenv


class ProcError(RuntimeError):
    """A child process did not do what the campaign waited for; ends with its log tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def find_mosquitto() -> str | None:
    """The mosquitto executable on PATH or where Debian, Homebrew or a source build put it."""
    candidates = (
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/opt/homebrew/sbin/mosquitto",
    )
    for cand in (shutil.which("mosquitto"), *candidates):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


class Proc:
    """One child process; its output lines are kept (all starts) for waits and checks."""

    def __init__(self, name: str, cmd: Sequence[str], log_dir: Path) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._cond = threading.Condition()
        self._lines: list[str] = []
        self._start_index = 0
        self._eof = True
        self._reader: threading.Thread | None = None
        self.starts = 0

    def start(self) -> Proc:
        if self.running:
            raise ProcError(f"{self.name} is already running")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with self._cond:
            self._start_index = len(self._lines)
            self._eof = False
        self._proc = subprocess.Popen(
            self.cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1
        assert self._proc.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self._proc.stdout,), name=f"log-{self.name}", daemon=True
        )
        self._reader.start()
        return self

    def _read(self, stream: IO[bytes]) -> None:
        with open(self.log_path, "ab") as log:
            for raw in iter(stream.readline, b""):
                log.write(raw)
                log.flush()
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
            raise ProcError(f"{self.name} was never started")
        return self._proc.pid

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to this process if it runs; do not wait."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self._proc.send_signal(sig)

    def signal(
        self, sig: signal.Signals, timeout_s: float = EXIT_TIMEOUT_S, *, must_exit: bool = False
    ) -> int | None:
        """Send ``sig`` to this process and wait for it to exit; its return code.

        A process still running after ``timeout_s`` is killed; with ``must_exit`` that is
        also a ProcError (the process ignored ``sig``).
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            rc = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait(timeout_s)
            if must_exit:
                raise ProcError(
                    f"{self.name} did not exit within {timeout_s:g} s of {sig.name}\n{self.tail()}"
                ) from None
        finally:
            if self._reader is not None:
                self._reader.join(timeout_s)
        return rc

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    @property
    def started(self) -> bool:
        return self._proc is not None

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def stop(self) -> int | None:
        return self.signal(signal.SIGTERM)

    # -- log ---------------------------------------------------------------------------
    def mark(self) -> int:
        with self._cond:
            return len(self._lines)

    def lines(self, since: int = 0) -> list[str]:
        with self._cond:
            return self._lines[since:]

    def tail(self, n: int = 15) -> str:
        return "\n".join(self.lines()[-n:])

    def wait_for(self, pattern: str, timeout_s: float, since: int | None = None) -> re.Match[str]:
        """The first line matching ``pattern`` since ``since`` (default: this start)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            pos = self._start_index if since is None else since
            while True:
                while pos < len(self._lines):
                    m = regex.search(self._lines[pos])
                    if m is not None:
                        return m
                    pos += 1
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
        why = "exited" if self._eof else f"logged nothing matching within {timeout_s:g} s"
        raise ProcError(f"{self.name} {why}: waiting for /{pattern}/\n{self.tail()}")


class Procs:
    """Every process of a campaign; all stopped at the end, whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    def add(self, name: str, cmd: Sequence[str]) -> Proc:
        p = Proc(name, cmd, self.log_dir)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.send(signal.SIGTERM)  # all at once, then wait for each
        for p in reversed(self.procs):
            p.signal(signal.SIGTERM)

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def vmcu_cmd(
    board: str,
    flash: Path,
    link: Path,
    *,
    load: Path | None = None,
    key: Path | None = None,
    baud: int | None = None,
) -> list[str]:
    cmd = [
        PY,
        "-m",
        "bootloader.sim.vmcu",
        "--board",
        board,
        "--flash",
        str(flash),
        "--link",
        str(link),
    ]
    if baud:
        cmd += ["--baud", str(baud)]
    if key is not None:
        cmd += ["--key", str(key)]
    if load is not None:
        cmd += ["--load", str(load)]
    return cmd


def start_vmcu(proc: Proc, timeout_s: float = 15.0) -> None:
    """Start (or restart) a virtual MCU and wait for its first boot.  ``--load`` programs
    the flash on the first start only: later starts boot what the flash file holds."""
    mark = proc.mark()
    proc.start()
    if "--load" in proc.cmd:
        i = proc.cmd.index("--load")
        del proc.cmd[i : i + 2]
    proc.wait_for(r"boot \d+:", timeout_s, since=mark)


def wait_until(
    what: str, cond: Callable[[], object], timeout_s: float, step_s: float = 0.05
) -> None:
    """Poll ``cond()`` until true; for conditions with nothing to wait on (a file, a port)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step_s)
    raise ProcError(f"timed out after {timeout_s:g} s waiting for {what}")
