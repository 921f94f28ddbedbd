"""A rig for the update flow's fault matrix: the real receiver and MCUboot model in-process,
a line that loses, duplicates and delays chosen messages, and firmware that confirms itself
at once, a little later, just as the bridge gives up, never, or crashes.

The truth the flow's outcome is checked against is the device's: what the model booted
last (what runs), whether its trailer says confirmed, and what MCUboot boots at the next
reset, found by booting a copy of the flash.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Final

import cbor2

from bootloader.formats.layout import Layout, load_board
from bootloader.sim.model.boot import BootedImage, boot
from host_bridge.device import DeviceUpdater, Outcome
from host_bridge.flow_events import UpdateOptions
from host_bridge.image.prepare import PreparedImage, prepare
from host_bridge.image.sign import SigningParams, sign_payload
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink
from mcu import bootutil
from mcu import mcuboot as mb
from mcu import smp_frame as sf
from reliability.common import firmware_payload
from reliability.inproc import CutFlash, Device, FakeClock, HostPort, _Reset

# What can happen to one request on the line (or in the device):
#   ok       delivered, handled, answered
#   lost     never reaches the device
#   noreply  handled, the reply is lost
#   late     handled, the reply comes after the bridge gave up on it; a reset takes
#            effect only after the device has answered one more request
#   dup      the line delivers it twice: handled twice, answered twice
FAULTS: Final = ("ok", "lost", "noreply", "late", "dup")
KINDS: Final = ("state", "mark", "confirm", "reset", "erase")
# How the new firmware behaves on its test boot.
BEHAVIOURS: Final = ("confirm", "slow", "late", "never", "crash")
SLOW_CONFIRM_S: Final = 1.0  # "slow" confirms this long after it boots
CRASH_AFTER_S: Final = 0.5  # "crash" resets itself (a watchdog) this long after it boots

OPTIONS: Final = UpdateOptions(
    confirm_timeout_s=2.0, boot_timeout_s=3.0, poll_s=0.25, reset_grace_s=0.75
)


@cache
def layout() -> Layout:
    return load_board("tiny")


@cache
def images() -> tuple[PreparedImage, PreparedImage]:
    """(old, new), signed for the tiny board."""
    params = SigningParams.from_layout(layout())
    old = sign_payload(firmware_payload(1500, "old", "confirm"), None, "1.0.0", params)
    new = sign_payload(firmware_payload(1500, "new", "confirm"), None, "2.0.0", params)
    return prepare(old), prepare(new)


@cache
def fresh_flash() -> bytes:
    """A flash with the old image confirmed in the primary slot."""
    lay = layout()
    flash = CutFlash(lay)
    data = images()[0].data
    flash.area(lay.slot0).write(0, data + bytes([lay.erased_val]) * (-len(data) % lay.write_size))
    return flash.snapshot()


def kind_of(packet: bytes) -> str:
    op, _v, _f, _n, group, _seq, cmd = sf.unpack_header(packet)
    if group == 0 and cmd == sf.OS_RESET:
        return "reset"
    if group == 1 and cmd == 0:
        if op == sf.OP_READ:
            return "state"
        body = cbor2.loads(packet[sf.HEADER_SIZE :]) if len(packet) > sf.HEADER_SIZE else {}
        return "confirm" if body.get("confirm") else "mark"
    if group == 1 and cmd == 5:
        return "erase"
    return "other"  # uploads, params: never faulted here


@dataclass
class FlowDevice(Device):
    """The in-process device with a faulty line and firmware of a chosen behaviour."""

    clock: FakeClock = field(default_factory=FakeClock)
    new_hash: str = ""
    behaviour: str = "confirm"
    schedule: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ignore_confirm: bool = False  # acknowledges confirm writes, applies none
    mismatch: bool = False  # answers the last upload chunk with match: false
    seen: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._confirm_at: float | None = None
        self._crash_at: float | None = None
        self._confirm_on_reset = False
        self._held: list[bytes] = []
        self._deferred_reset = False
        super().__post_init__()

    # -- the firmware -------------------------------------------------------------------
    def firmware_starts(self, booted: BootedImage) -> None:
        self._confirm_at = self._crash_at = None
        self._confirm_on_reset = False
        if booted.confirmed:
            return
        if booted.hash != self.new_hash:
            super().firmware_starts(booted)  # the old image confirms itself on boot
            return
        now = self.clock.now
        if self.behaviour == "confirm":
            self._confirm()
        elif self.behaviour == "slow":
            self._confirm_at = now + SLOW_CONFIRM_S
        elif self.behaviour == "late":
            self._confirm_on_reset = True
        elif self.behaviour == "crash":
            self._crash_at = now + CRASH_AFTER_S

    def _confirm(self) -> None:
        bootutil.confirm(self.flash.area(self.layout.slot0), self.layout.max_align)

    def tick(self) -> None:
        """Run the firmware's timers up to the clock's now."""
        now = self.clock.now
        if self._confirm_at is not None and now >= self._confirm_at:
            self._confirm_at = None
            self._confirm()
        if self._crash_at is not None and now >= self._crash_at:
            self._crash_at = None
            self.power_on()  # the watchdog resets it, unconfirmed

    # -- the wire -----------------------------------------------------------------------
    def _fault(self, kind: str) -> str:
        n = self.seen[kind]
        self.seen[kind] += 1
        plan = self.schedule.get(kind, ())
        return plan[n] if n < len(plan) else "ok"

    def receive(self, data: bytes) -> None:
        self.tick()
        for packet in self._decoder.feed(bytes(data)):
            packet = bytes(packet)
            kind = kind_of(packet)
            fault = self._fault(kind) if kind != "other" else "ok"
            if fault == "lost":
                continue
            if kind == "reset" and self._confirm_on_reset:
                self._confirm()  # its self-test ends just as the reset arrives
            handled = packet
            if kind == "confirm" and self.ignore_confirm:
                handled = _as_state_read(packet)
            for _ in range(2 if fault == "dup" else 1):
                reply = self._server.handle(handled)
                if reply is None:
                    continue
                if self.mismatch and kind == "other":
                    reply = _mismatched(bytes(reply))
                wire = bytes(sf.encode_console(reply))
                if fault == "noreply":
                    pass
                elif fault == "late":
                    self._held.append(wire)
                else:
                    self._out += b"".join(self._held) + wire
                    self._held.clear()
            action, self._server.after_reply = self._server.after_reply, None
            if action is not None and kind == "reset" and fault == "late":
                self._deferred_reset = True
                continue
            if action is None and self._deferred_reset:
                action, self._deferred_reset = self._reset, False
            if action is not None:
                try:
                    action()
                except _Reset:
                    self.power_on()
                    return  # what arrived during the reset is lost, as on a UART

    def client(self, timeout_s: float = 0.001, retries: int = 0) -> SmpClient:
        port = HostPort(self)
        link = SerialLink("inproc://flow", opener=lambda url, baud: port)
        client = SmpClient(link, timeout_s=timeout_s, retries=retries)
        client.erase_timeout_s = timeout_s
        return client


def _mismatched(reply: bytes) -> bytes:
    """An upload reply that says the image's hash does not match."""
    body = cbor2.loads(reply[sf.HEADER_SIZE :])
    if not (isinstance(body, dict) and "match" in body):
        return reply
    body["match"] = False
    payload = cbor2.dumps(body)
    op, v, f, _n, group, seq, cmd = sf.unpack_header(reply)
    return sf.pack_header(op, v, f, len(payload), group, seq, cmd) + payload


def _as_state_read(packet: bytes) -> bytes:
    """The same request as an image state read: a device that acknowledges a confirm with
    the state it has, and changes nothing."""
    _op, v, f, _n, group, seq, cmd = sf.unpack_header(packet)
    return sf.pack_header(sf.OP_READ, v, f, 1, group, seq, cmd) + b"\xa0"


@dataclass(frozen=True)
class Truth:
    running: str  # hash (hex) of what runs
    confirmed: bool
    next_boot: str  # hash (hex) of what MCUboot boots at the next reset
    pending: bool  # slot 1 is marked for a boot


def truth(dev: FlowDevice) -> Truth:
    dev.tick()
    lay = dev.layout
    booted = dev.boots[-1].booted
    assert booted is not None, "the device does not run any image"
    confirmed = bootutil.is_confirmed(dev.flash.area(lay.slot0), lay.max_align)
    copy = CutFlash(lay)
    copy.restore(dev.flash.snapshot())
    nxt = boot(copy, lay).booted
    assert nxt is not None, "the next boot would find no image"
    kind = mb.swap_type(dev.flash.area(lay.slot0), dev.flash.area(lay.slot1), lay.max_align)
    return Truth(booted.hash, bool(confirmed), nxt.hash, kind in (mb.SWAP_TEST, mb.SWAP_PERM))


@dataclass
class Run:
    outcome: Outcome
    truth: Truth
    device: FlowDevice


def run_flow(
    behaviour: str,
    policy: str = "device",
    schedule: dict[str, tuple[str, ...]] | None = None,
    ignore_confirm: bool = False,
    mismatch: bool = False,
    allow_erase_pending: bool = True,
    retries: int = 0,
    options: UpdateOptions = OPTIONS,
) -> Run:
    new = images()[1]
    lay = layout()
    flash = CutFlash(lay)
    flash.restore(fresh_flash())
    clock = FakeClock()
    dev = FlowDevice(
        layout=lay,
        flash=flash,
        allow_erase_pending=allow_erase_pending,
        clock=clock,
        new_hash=new.hash.hex(),
        behaviour=behaviour,
        schedule=dict(schedule or {}),
        ignore_confirm=ignore_confirm,
        mismatch=mismatch,
    )
    opts = UpdateOptions(**{**OPTIONS.__dict__, **options.__dict__, "policy": policy})
    outcome = DeviceUpdater(
        dev.client(retries=retries), opts, sleep=clock.sleep, clock=clock.clock
    ).update(new)
    return Run(outcome, truth(dev), dev)


def violations(run: Run) -> list[str]:
    """Where the outcome is not the truth of what the device runs and boots next."""
    old, new = (i.hash.hex() for i in images())
    o, t = run.outcome, run.truth
    bad: list[str] = []
    if o.hash is not None and o.hash != t.running:
        bad.append(f"outcome names {o.hash[:8]} but {t.running[:8]} runs")
    if o.hash is None and "answer" not in o.reason:
        bad.append("outcome names no running image though the device answers")
    if t.running == new and t.confirmed and o.status != "confirmed":
        bad.append(f"the new image runs confirmed but the outcome is {o.status}")
    if o.status == "confirmed":
        if not (t.running == new and t.confirmed and t.next_boot == new):
            bad.append("confirmed, but the new image is not running confirmed for good")
    elif o.status == "reverted":
        if not (t.running == old and t.next_boot == old):
            bad.append("reverted, but the old image is not what runs and boots next")
    elif "its next reset reverts to" in o.reason:
        if not (t.running == new and not t.confirmed and t.next_boot == old):
            bad.append("says the next reset reverts, but it would not")
    elif "may still be marked for a test boot" in o.reason:
        pass  # the device stopped answering: the outcome says it does not know
    elif "marked for a test boot" in o.reason:
        if t.next_boot != new:
            bad.append("warns the new image will test-boot, but it would not")
    elif t.next_boot != t.running:
        bad.append(
            f"failed ({o.reason}), but the next reset boots {t.next_boot[:8]} "
            f"instead of the running {t.running[:8]}, with no job watching"
        )
    if t.pending and "marked for a test boot" not in o.reason:
        bad.append("slot 1 stays marked for a boot after the job ended")
    return bad
