"""A mosquitto broker for tests: started on free ports of 127.0.0.1, watched, stopped.

    with Mosquitto(tmp_path) as broker:              # a plain listener on broker.port
        ...
    with Mosquitto(tmp_path, tls=True) as broker:    # and a TLS listener on broker.tls_port
        broker.pki.ca, broker.pki.client("device-1")  # that requires a client certificate
    broker.restart()                                  # SIGTERM, then start on the same ports

The configuration is generated in the test's directory; the CA, the server certificate
(127.0.0.1 and localhost) and client certificates are made with ``cryptography``.  Every wait
is bounded: readiness (mosquitto logs "running", then a TCP connect succeeds), and the exit on
SIGTERM.  Without mosquitto installed, starting one raises :class:`BrokerError`, so the test
fails with that message instead of being skipped.
"""

from __future__ import annotations

import contextlib
import getpass
import re
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from harness.procs import Proc, ProcError, find_mosquitto, free_port
from localjobs import pki

HOST: Final = "127.0.0.1"
READY_TIMEOUT_S: Final = 10.0
EXIT_TIMEOUT_S: Final = 5.0
PORT_ATTEMPTS: Final = 3


class BrokerError(AssertionError):
    """mosquitto is missing, or did not start or stop as the test needs."""


def require_mosquitto() -> str:
    """The mosquitto executable, or BrokerError saying how to install it."""
    found = find_mosquitto()
    if found is None:
        raise BrokerError(
            "mosquitto is not installed: the MQTT tests need a real broker "
            "(Debian/Ubuntu: apt-get install mosquitto; macOS: brew install mosquitto)"
        )
    return found


@dataclass(frozen=True)
class ClientCert:
    cert: str
    key: str


class TestPki:
    """A CA, the broker's server certificate, and client certificates on demand."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._ca = pki.make_ca("mosquitto test CA")
        self.ca = str(directory / "ca.pem")
        self._ca.write(Path(self.ca), directory / "ca.key")
        self.server_cert = str(directory / "server.pem")
        self.server_key = str(directory / "server.key")
        pki.make_leaf(self._ca, "mosquitto", hosts=("127.0.0.1", "localhost")).write(
            Path(self.server_cert), Path(self.server_key)
        )

    def client(self, name: str) -> ClientCert:
        cert, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        if not cert.exists():
            pki.make_leaf(self._ca, name, client=True).write(cert, key)
        return ClientCert(str(cert), str(key))


class Mosquitto:
    """One mosquitto process with its configuration in ``directory``."""

    def __init__(self, directory: Path, *, tls: bool = False) -> None:
        self.directory = directory
        self.executable = require_mosquitto()
        directory.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = free_port()
        self.pki: TestPki | None = TestPki(directory / "pki") if tls else None
        self.tls_port: int | None = free_port() if tls else None
        self.config = directory / "mosquitto.conf"
        self._proc = Proc("mosquitto-output", [self.executable, "-c", str(self.config)], directory)
        self.starts = 0  # starts on the current ports (a port clash on the first resets it)

    def write_config(self) -> None:
        lines = [
            "per_listener_settings false",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            f"log_dest file {self.directory / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"user {getpass.getuser()}",
            f"listener {self.port} {self.host}",
        ]
        if self.pki is not None:
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.pki.ca}",
                f"certfile {self.pki.server_cert}",
                f"keyfile {self.pki.server_key}",
                "require_certificate true",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    # -- process control -------------------------------------------------------------------
    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start and wait until every listener accepts.  On the first start only, ports
        another process took since :func:`free_port` chose them are chosen again (at most
        PORT_ATTEMPTS times); a restart keeps its ports."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start(timeout_s)
                return
            except BrokerError:
                in_use = "Address already in use" in self.log_text(10)
                if self.starts > 1 or not in_use or attempt == PORT_ATTEMPTS:
                    raise
                self.starts = 0
                self.port = free_port()
                self.tls_port = free_port() if self.tls_port is not None else None

    def _start(self, timeout_s: float) -> None:
        if self.running:
            raise BrokerError("mosquitto is already running")
        self.write_config()
        self._proc.start()
        self.starts += 1
        self.wait_for_log(" running", timeout_s)
        for port in (self.port, self.tls_port):
            if port is not None:
                try:
                    socket.create_connection((self.host, port), timeout=timeout_s).close()
                except OSError as exc:
                    raise BrokerError(
                        f"mosquitto does not accept on {port}: {exc}\n{self.log_text(40)}"
                    ) from exc

    def wait_for_log(self, text: str, timeout_s: float = READY_TIMEOUT_S) -> str:
        """The first line of the current run that contains ``text``."""
        try:
            return self._proc.wait_for(re.escape(text), timeout_s).string
        except ProcError:
            how = "exited before logging" if not self.running else "did not log"
            raise BrokerError(
                f"mosquitto {how} {text!r} within {timeout_s} s\n{self.log_text(40)}"
            ) from None

    @property
    def running(self) -> bool:
        return self._proc.running

    def stop(self, timeout_s: float = EXIT_TIMEOUT_S) -> None:
        """SIGTERM, then a bounded wait (SIGKILL and BrokerError if it does not exit)."""
        try:
            self._proc.signal(signal.SIGTERM, timeout_s, must_exit=True)
        except ProcError:
            raise BrokerError(
                f"mosquitto ignored SIGTERM for {timeout_s} s\n{self.log_text(40)}"
            ) from None

    def restart(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Stop, then start again on the same ports."""
        self.stop()
        self.start(timeout_s)

    def log_text(self, last: int | None = None) -> str:
        """The log of every run so far (its ``last`` lines only, when given)."""
        lines = self._proc.lines()
        return "\n".join(lines if last is None else lines[-last:])

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
            return
        with contextlib.suppress(BrokerError):  # do not mask the test's own failure
            self.stop()
