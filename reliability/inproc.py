"""An in-process device: the mcu/ SMP server over a modelled flash, MCUboot's boot on
reset, the firmware's confirm-on-boot, behind a port the bridge's SerialLink can open.

No pty, no threads, no real clock: a request written by the host is decoded, handled and
answered before ``write`` returns, and an SMP reset reboots the device right there.  The
flash counts every operation by phase and can lose power before any of them
(:class:`CutFlash`); after a cut the device is dead until :meth:`Device.power_on`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from bootloader.formats.layout import Layout
from bootloader.sim.flash import Flash, PowerCut
from bootloader.sim.model.boot import BootedImage, BootResult, boot
from bootloader.sim.vmcu import behaviour
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink
from mcu import bootutil
from mcu import mcuboot as mb
from mcu import smp_frame as sf
from mcu.receiver import make_server

GROUP_IMAGE: Final = 1


class PowerLost(BaseException):
    """The device lost power.  A BaseException, so that no handler between the flash and
    the campaign (the receiver maps flash errors to SMP errors, the link maps port errors
    to LinkError) can take it for something the flow should recover from."""


class CutFlash(Flash):
    """A flash that records the phase of every operation and stays dead after a cut."""

    def __init__(self, layout: Layout) -> None:
        super().__init__(
            layout.flash_size, layout.sector_size, layout.write_size, layout.erased_val
        )
        self.phase = "idle"
        self.trace: list[str] = []  # phase of each operation, in order
        self.dead = False
        self.cut_phase: str | None = None

    def _count(self) -> None:  # the one hook every write and erase goes through
        if self.dead:
            raise PowerCut(self.ops + 1)
        try:
            super()._count()
        except PowerCut:
            self.dead = True
            self.cut_phase = self.phase
            raise
        self.trace.append(self.phase)

    def revive(self) -> None:
        self.arm_power_cut(None)
        self.dead = False
        self.cut_phase = None


class _Reset(Exception):
    pass


@dataclass
class Device:
    """The device: flash, firmware behaviour by image hash, SMP server; boots on reset.

    ``drop(packet)`` returning True loses a request on its way in, ``drop_reply(packet)``
    its reply on the way out (a noisy line); ``requests`` counts what was handled, by
    (group, command).
    """

    layout: Layout
    flash: CutFlash
    buf_size: int = 512
    buf_count: int = 4
    allow_erase_pending: bool = True
    drop: Callable[[bytes], bool] | None = None
    drop_reply: Callable[[bytes], bool] | None = None
    boots: list[BootResult] = field(default_factory=list)
    requests: Counter[tuple[int, int]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._in = bytearray()
        self._out = bytearray()
        self._decoder = sf.ConsoleDecoder(self.buf_size - 4)
        self.power_on()

    # -- power and boot ------------------------------------------------------------------
    def power_on(self) -> BootResult:
        """Boot through MCUboot, run the firmware's confirm-on-boot, start the SMP server."""
        pri, sec = self.flash.area(self.layout.slot0), self.flash.area(self.layout.slot1)
        kind = mb.swap_type(pri, sec, self.layout.max_align)
        self.flash.phase = "revert" if kind == mb.SWAP_REVERT else "swap"
        try:
            result = boot(self.flash, self.layout)
            self.boots.append(result)
            if result.booted is not None:
                self.flash.phase = "confirm"
                self.firmware_starts(result.booted)
        except PowerCut:
            raise PowerLost() from None
        finally:
            self.flash.phase = "idle"
        self._server = make_server(
            pri,
            sec,
            self._reset,
            self.layout.max_align,
            self.layout.trailer_size(),
            self.layout.mode,
            self.buf_size,
            self.buf_count,
            self.allow_erase_pending,
        )
        self._decoder.reset()
        self._in.clear()
        return result

    def firmware_starts(self, booted: BootedImage) -> None:
        """The booted firmware's start: confirm-on-boot, as its payload says
        (:func:`bootloader.sim.vmcu.behaviour`).  A subclass can model other firmware."""
        if not booted.confirmed and behaviour(self.flash, self.layout, booted) == "confirm":
            bootutil.confirm(self.flash.area(self.layout.slot0), self.layout.max_align)

    def _reset(self) -> None:
        raise _Reset()

    # -- the wire ------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Bytes from the host: every complete request is handled and answered now."""
        if self.flash.dead:
            return  # no power: the bytes fall on the floor
        for packet in self._decoder.feed(bytes(data)):
            if self.drop is not None and self.drop(bytes(packet)):
                continue
            _op, _v, _f, _n, group, _seq, command = sf.unpack_header(packet)
            self.requests[(group, command)] += 1
            self.flash.phase = _phase_of(bytes(packet))
            try:
                reply = self._server.handle(packet)
            finally:
                self.flash.phase = "idle"
            if self.flash.dead:
                raise PowerLost()  # whatever the handler made of the cut, nothing is sent
            if reply is None:
                continue
            if self.drop_reply is None or not self.drop_reply(bytes(packet)):
                self._out += sf.encode_console(reply)
            action = self._server.after_reply
            if action is not None:
                self._server.after_reply = None
                try:
                    action()
                except _Reset:
                    self.power_on()
                    return  # input that arrived during the reset is lost, as on a UART

    def client(self, timeout_s: float = 0.05) -> SmpClient:
        """An SmpClient of the bridge on this device's port."""
        port = HostPort(self)
        return SmpClient(
            SerialLink("inproc://device", opener=lambda url, baud: port), timeout_s=timeout_s
        )


def is_reset(packet: bytes) -> bool:
    """An SMP reset request (OS group 0, command 5)."""
    if len(packet) < sf.HEADER_SIZE:
        return False
    op, _v, _f, _n, group, _seq, command = sf.unpack_header(packet)
    return bool(op == sf.OP_WRITE and group == 0 and command == sf.OS_RESET)


def _phase_of(packet: bytes) -> str:
    if len(packet) < sf.HEADER_SIZE:
        return "idle"
    op, _v, _f, _n, group, _seq, cmd = sf.unpack_header(packet)
    if group == GROUP_IMAGE and op == sf.OP_WRITE:
        return {0: "pending write", 1: "upload", 5: "erase"}.get(cmd, "idle")
    return "idle"


class HostPort:
    """The host's end of the wire (the part of ``serial.Serial`` SerialLink uses)."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.timeout: float | None = None

    @property
    def in_waiting(self) -> int:
        return len(self.device._out)

    def read(self, size: int = 1) -> bytes:
        out = self.device._out
        data = bytes(out[:size])
        del out[:size]
        return data

    def write(self, data: bytes) -> int:
        self.device.receive(data)
        return len(data)

    def close(self) -> None:
        pass


class FakeClock:
    """The updater's clock: sleeping advances it, so its waits cost no real time."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
