"""The serial link: pyserial underneath, SMP framing on top, packets in and out.

The framing codecs are the device's own (``mcu.smp_frame``): the same Zephyr-exact
console framing (base64 lines of whole quads, CRC-16/XMODEM) and raw framing, so host and
device can never disagree on the wire format.

No write can hang: every port has a write timeout sized from the baud rate, and a port
that stops taking data (flow control held, or nothing reading the line) is a LinkError,
which callers handle like a pulled cable.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import serial

from fota_common.errors import LinkError
from mcu import smp_frame as sf

FRAMINGS = ("console", "raw")
# A read waits this long at most for its first byte.  Set once, when the port opens:
# pyserial reconfigures the port on every timeout change (termios calls; on rfc2217://
# a round of option negotiation over the network).
READ_POLL_S = 0.05
# Writes go out in pieces of at most this many bytes (a UART driver's transmit buffer), so
# one write timeout, fixed at open, bounds every write: a piece on a healthy line takes
# WRITE_PIECE * 10 / baud seconds at most (8N1: 10 bits a byte; 0.36 s at 115200).
WRITE_PIECE = 4096
WRITE_SLACK_S = 1.0  # on top of twice a piece's time on the line (USB adapters, scheduling)


class Port(Protocol):
    """The part of ``serial.Serial`` the link uses (tests pass fakes)."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def close(self) -> None: ...

    @property
    def in_waiting(self) -> int: ...


def write_timeout_s(baudrate: int) -> float:
    """How long one write may wait for the port: twice a piece's time on the line, and
    WRITE_SLACK_S more.  A port that takes no data for that long is stalled (flow control
    held, or nothing reads the line)."""
    return WRITE_SLACK_S + 2 * WRITE_PIECE * 10 / max(1, baudrate)


def open_serial(url: str, baudrate: int, write_timeout: float | None = None) -> Port:
    """Open a device path or any pyserial URL (socket://, rfc2217://, loop://).

    Every serial port the bridge opens comes from here, with a write timeout
    (``write_timeout_s(baudrate)`` unless given), so no write can block for ever.
    """
    wt = write_timeout_s(baudrate) if write_timeout is None else write_timeout
    try:
        port: Port = serial.serial_for_url(
            url, baudrate=baudrate, timeout=READ_POLL_S, write_timeout=wt
        )
    except (serial.SerialException, ValueError, OSError) as exc:
        raise LinkError(f"cannot open {url}: {open_failure(exc)}") from exc
    return port


class SerialLink:
    """SMP packets over a serial port with console or raw framing."""

    def __init__(
        self,
        url: str,
        baudrate: int = 115200,
        framing: str = "console",
        max_packet: int = 16384,
        opener: Callable[[str, int], Port] = open_serial,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}")
        self.url = url
        self.baudrate = baudrate
        self.framing = framing
        self.max_packet = max_packet
        self._opener = opener
        self._clock = clock
        self._port: Port | None = None
        self._queue: deque[bytes] = deque()
        self._decoder: Any = None
        self.bytes_out = 0
        self.bytes_in = 0
        # A write failed part-way: the device may hold a partial line that would swallow
        # the next request's first line.  A newline on the next open ends it (console only).
        self._torn = False

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        if self._port is None:
            self._port = self._opener(self.url, self.baudrate)
            if self._port.timeout != READ_POLL_S:
                self._port.timeout = READ_POLL_S  # once: recv never changes it
            self._reset_decoder()
            if self._torn and self.framing == "console":
                self._torn = False
                self.send_raw(b"\n")

    def close(self) -> None:
        if self._port is not None:
            with contextlib.suppress(OSError):
                self._port.close()
            self._port = None

    def reopen(self) -> None:
        self.close()
        self.open()

    def __enter__(self) -> SerialLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reset_decoder(self) -> None:
        self._queue.clear()
        if self.framing == "console":
            self._decoder = sf.ConsoleDecoder(self.max_packet)
        else:
            self._decoder = sf.RawDecoder(self.max_packet, 1000, lambda: int(self._clock() * 1000))

    @property
    def port(self) -> Port:
        if self._port is None:
            self.open()
        assert self._port is not None
        return self._port

    # -- packets ---------------------------------------------------------------------
    def frame(self, packet: bytes) -> bytes:
        """The bytes that carry ``packet`` on the wire."""
        if self.framing == "console":
            return bytes(sf.encode_console(packet))
        return packet

    def send(self, packet: bytes) -> None:
        self.send_raw(self.frame(packet))

    def send_raw(self, wire: bytes) -> None:
        port = self.port
        try:
            for i in range(0, len(wire), WRITE_PIECE):
                piece = wire[i : i + WRITE_PIECE]
                port.write(piece)
                self.bytes_out += len(piece)
        except serial.SerialTimeoutException as exc:
            self._torn = True
            wt = getattr(port, "write_timeout", None)
            after = f" after {wt:g} s" if isinstance(wt, int | float) else ""
            self.close()
            raise LinkError(
                f"write to {self.url} timed out{after}: the port takes no data "
                "(flow control held, or nothing reads the line)"
            ) from exc
        except Exception as exc:  # OSError, ValueError, pyserial's SerialException
            self._torn = True
            self.close()
            raise LinkError(f"write to {self.url} failed: {exc}") from exc

    def recv(self, timeout_s: float) -> bytes | None:
        """The next complete packet, or None when ``timeout_s`` passes without one."""
        if self._queue:
            return self._queue.popleft()
        deadline = self._clock() + timeout_s
        port = self.port
        while True:
            # The port's read timeout stays READ_POLL_S: a wait may end up to one poll late.
            if deadline - self._clock() <= 0:
                return None
            try:
                waiting = port.in_waiting
                data = port.read(max(1, min(waiting, 65536)))
            except Exception as exc:
                self.close()
                raise LinkError(f"read from {self.url} failed: {exc}") from exc
            if data:
                self.bytes_in += len(data)
                for packet in self._decoder.feed(data):
                    self._queue.append(bytes(packet))
            elif self.framing == "raw":
                self._decoder.feed(b"")
            if self._queue:
                return self._queue.popleft()


def open_failure(exc: BaseException) -> str:
    """Why a port did not open, once: pyserial wraps the OS's reason in a message that
    repeats the errno and the path ("[Errno 2] could not open port X: [Errno 2] No such
    file or directory: 'X'"), and a regular file fails its termios setup with ENOTTY."""
    cause = exc.__context__
    args = getattr(cause, "args", ())
    if args and args[0] == errno.ENOTTY:
        return "not a serial port (a tty or a pyserial URL)"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(exc)
