"""The serial link: pyserial underneath, SMP framing on top, packets in and out.

The framing codecs are the device's own (``mcu.smp_frame``): the same Zephyr-exact
console framing (base64 lines of whole quads, CRC-16/XMODEM) and raw framing, so host and
device can never disagree on the wire format.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from host_bridge.errors import LinkError
from mcu import smp_frame as sf

FRAMINGS = ("console", "raw")


class Port(Protocol):
    """The part of ``serial.Serial`` the link uses (tests pass fakes)."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def close(self) -> None: ...

    @property
    def in_waiting(self) -> int: ...


def open_serial(url: str, baudrate: int) -> Port:
    """Open a device path or any pyserial URL (socket://, rfc2217://, loop://)."""
    import serial

    try:
        port: Port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)
    except (serial.SerialException, ValueError, OSError) as exc:
        raise LinkError(f"cannot open {url}: {exc}") from exc
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
            port.write(wire)
        except (OSError, ValueError) as exc:
            self._torn = True
            self.close()
            raise LinkError(f"write to {self.url} failed: {exc}") from exc
        except Exception as exc:  # pyserial's SerialException is not an OSError
            self._torn = True
            self.close()
            raise LinkError(f"write to {self.url} failed: {exc}") from exc
        self.bytes_out += len(wire)

    def recv(self, timeout_s: float) -> bytes | None:
        """The next complete packet, or None when ``timeout_s`` passes without one."""
        if self._queue:
            return self._queue.popleft()
        deadline = self._clock() + timeout_s
        port = self.port
        while True:
            left = deadline - self._clock()
            if left <= 0:
                return None
            port.timeout = min(left, 0.05)
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
