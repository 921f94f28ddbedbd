"""What the host bridge tests share: firmware images for the tiny board, SMP clients on a
fota-vmcu pty, port wrappers that break the link on purpose, and the device's slot bytes.

Images are signed by imgtool (``bootloader.sim.testimages``); the virtual firmware's on-boot
behaviour rides in its payload (``#vmcu:{"on_boot": ...}``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import serial

from bootloader.formats.layout import Layout, load_board
from bootloader.sim.testimages import payload, sign
from harness.vmcu import Vmcu
from host_bridge.image.prepare import prepare
from host_bridge.smp.client import SlotState, SmpClient
from host_bridge.smp.link import Port, SerialLink, open_serial

BOARD: Final = "tiny"
REQUEST_TIMEOUT_S: Final = 1.0


def tiny_layout() -> Layout:
    return load_board(BOARD)


def firmware(version: str, on_boot: str = "confirm", size: int = 3300, seed: str = "") -> bytes:
    """A signed (hash-only) image whose virtual firmware does ``on_boot`` when it boots."""
    head = b'#vmcu:{"on_boot": "' + on_boot.encode() + b'"}\n'
    return sign(head + payload(size, seed or f"{version}:{on_boot}"), version, tiny_layout())


def tlv_hash(image: bytes) -> bytes:
    """The image's SHA256 TLV: what the device reports as its hash."""
    return prepare(image).hash


def client_for(
    vm: Vmcu,
    framing: str = "console",
    opener: Callable[[str, int], Port] = open_serial,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> SmpClient:
    return SmpClient(SerialLink(str(vm.link), framing=framing, opener=opener), timeout_s=timeout_s)


def slot(states: list[SlotState], number: int) -> SlotState | None:
    return next((s for s in states if s.slot == number), None)


def slot_bytes(vm: Vmcu, number: int, size: int) -> bytes:
    """The first ``size`` bytes of a slot, read from the virtual MCU's flash file."""
    lay = tiny_layout()
    part = lay.slot0 if number == 0 else lay.slot1
    with open(vm.flash, "rb") as f:
        f.seek(part.offset)
        return f.read(size)


class WrappedPort:
    """A real serial port whose writes go through ``on_write`` (which may drop, alter,
    cut or pass them on); everything else is the port's own."""

    def __init__(self, inner: Port, on_write: Callable[[WrappedPort, bytes], None]) -> None:
        self.inner = inner
        self.on_write = on_write

    @property
    def timeout(self) -> float | None:
        return self.inner.timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self.inner.timeout = value

    @property
    def in_waiting(self) -> int:
        return self.inner.in_waiting

    def read(self, size: int = 1) -> bytes:
        return self.inner.read(size)

    def write(self, data: bytes) -> int | None:
        self.on_write(self, data)
        return len(data)

    def pass_on(self, data: bytes) -> None:
        self.inner.write(data)

    def close(self) -> None:
        self.inner.close()


class LinkCutter:
    """An opener whose first port is unplugged once ``budget`` bytes have been written.

    ``torn`` False: the write that would cross the budget is refused whole (the cut falls
    between packets); True: its bytes up to the budget go out first (the cut falls mid-line).
    Later opens get a healthy port.
    """

    def __init__(self, budget: int, torn: bool = False) -> None:
        self.budget = budget
        self.torn = torn
        self.opens = 0
        self.written = 0
        self.cut = False

    def __call__(self, url: str, baudrate: int) -> Port:
        self.opens += 1
        port = open_serial(url, baudrate)
        if self.opens > 1:
            return port
        return WrappedPort(port, self._write)

    def _write(self, port: WrappedPort, data: bytes) -> None:
        if self.cut:
            raise serial.PortNotOpenError()
        left = self.budget - self.written
        if len(data) <= left:
            port.pass_on(data)
            self.written += len(data)
            return
        if self.torn and left > 0:
            port.pass_on(data[:left])
            self.written += left
        self.cut = True
        port.close()
        raise serial.SerialException("the cable was pulled")


class FrameMangler:
    """An opener whose ports drop or corrupt the ``index``-th write (1-based): one packet."""

    def __init__(self, index: int, mode: str = "drop") -> None:
        assert mode in ("drop", "corrupt")
        self.index = index
        self.mode = mode
        self.writes = 0
        self.mangled = 0

    def __call__(self, url: str, baudrate: int) -> Port:
        return WrappedPort(open_serial(url, baudrate), self._write)

    def _write(self, port: WrappedPort, data: bytes) -> None:
        self.writes += 1
        if self.writes != self.index:
            port.pass_on(data)
            return
        self.mangled += 1
        if self.mode == "drop":
            return
        # Swap one base64 character of the first line for another: the line still decodes
        # but the packet's CRC no longer matches, so the device drops it.
        mangled = bytearray(data)
        pos = 40
        mangled[pos] = ord("A") if mangled[pos] != ord("A") else ord("B")
        port.pass_on(bytes(mangled))
