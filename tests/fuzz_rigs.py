"""Rigs for tests/test_fuzz.py: the images, a device on RAM flash, fake ports and links.

Everything here is a real peer's stand-in with no behaviour of its own to test: the MCU's SMP
server over two RamArea slots (the receiver as it runs on a board), a serial port made of
queued chunks, and SMP links that record what the client sends and answer from a script.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import cbor2

from bootloader.formats import image as bimg
from bootloader.formats import verify as bverify
from bootloader.formats.layout import Layout
from bootloader.sim.flash import Flash
from bootloader.sim.model.common import make_validator
from mcu import cbor
from mcu import mcuboot as mb
from mcu import smp_frame as sf
from mcu.flash_area import RamArea
from mcu.receiver import make_server

BUF_SIZE: Final = 2048


@dataclass(frozen=True)
class Images:
    """v1 and v2 for the tiny board: hash-only, signed by trusted keys, by an untrusted one."""

    v1: bytes
    v2: bytes
    v1_signed: bytes
    v2_signed: bytes
    v2_untrusted: bytes
    v2_ed25519: bytes
    v2_rsa: bytes
    keys: list[Any] = field(default_factory=list)  # trusted: the ECDSA, Ed25519 and RSA ones

    @cached_property
    def trusted_regions(self) -> set[bytes]:
        signed = (self.v1_signed, self.v2_signed, self.v2_ed25519, self.v2_rsa)
        return {bimg.parse_image(b).hash_region for b in signed}

    @property
    def bases(self) -> tuple[bytes, ...]:
        return (
            self.v1,
            self.v2,
            self.v1_signed,
            self.v2_signed,
            self.v2_untrusted,
            self.v2_ed25519,
            self.v2_rsa,
        )


class Device:
    """The MCU's SMP server over two RamArea slots, the running image in the primary."""

    def __init__(self, layout: Layout, running: bytes, allow_erase_pending: bool = False) -> None:
        self.layout = layout
        self.primary = RamArea(layout.slot0.size, layout.sector_size, layout.write_size)
        self.secondary = RamArea(layout.slot1.size, layout.sector_size, layout.write_size)
        self.primary.write(0, running + b"\xff" * (-len(running) % layout.write_size))
        self.resets = 0
        self.server = make_server(
            self.primary,
            self.secondary,
            self._reset,
            layout.max_align,
            layout.trailer_size(),
            layout.mode,
            BUF_SIZE,
            4,
            allow_erase_pending,
        )

    def _reset(self) -> None:
        self.resets += 1

    def trailer(self) -> bytes:
        n = self.layout.trailer_sectors() * self.layout.sector_size
        return self.secondary.read(self.secondary.size - n, n)

    def flash(self) -> Flash:
        """The same flash contents as the simulator's Flash, for the MCUboot model."""
        flash = Flash.for_layout(self.layout)
        contents = bytearray(flash.snapshot())
        for part, area in ((self.layout.slot0, self.primary), (self.layout.slot1, self.secondary)):
            contents[part.offset : part.end] = area.mem
        flash.restore(bytes(contents))
        return flash


def request(op: int, group: int, command: int, body: dict[str, Any], seq: int = 0) -> bytes:
    payload = cbor.encode(body)
    return sf.pack_header(op, sf.VERSION_2, 0, len(payload), group, seq, command) + payload


def reply_body(reply: bytes | None) -> dict[str, Any]:
    assert reply is not None
    body = cbor.decode(reply, sf.HEADER_SIZE, max_depth=8, max_items=512)
    assert isinstance(body, dict)
    return body


def is_error(body: dict[str, Any]) -> bool:
    return bool(body.get("rc", 0)) or "err" in body


class FakePort:
    def __init__(self, chunks: list[bytes]) -> None:
        self.rx = list(chunks)
        self.tx = bytearray()

    def read(self, n: int) -> bytes | None:
        if not self.rx:
            return None
        chunk = self.rx.pop(0)
        if len(chunk) > n:
            self.rx.insert(0, chunk[n:])
        return chunk[:n]

    def write(self, data: bytes) -> None:
        self.tx += data


def valid_image(image: bytes, keys: list[Any], layout: Layout) -> bool:
    """Would MCUboot take this image: it parses, validates and fits the swap."""
    try:
        parsed = bimg.parse_image(image)
    except bimg.ImageError:
        return False
    return parsed.total_size <= layout.max_image_size() and bverify.verify_image(parsed, keys).ok


def assert_primary_valid(flash: Flash, layout: Layout, keys: list[Any]) -> None:
    area = flash.area(layout.slot0)
    info = mb.image_info(area)
    assert info is not None
    ok, reason = make_validator(keys)(area.read(0, info["size"]))
    assert ok, reason


class FakeLink:
    """A link whose replies are queued in advance; what the client sends is recorded."""

    url = "fake://device"
    framing = "raw"
    baudrate = 115200

    def __init__(self, replies: Sequence[bytes] = ()) -> None:
        self.rx = list(replies)
        self.sent: list[bytes] = []

    def send(self, packet: bytes) -> None:
        self.sent.append(packet)

    def recv(self, timeout_s: float) -> bytes | None:
        return self.rx.pop(0) if self.rx else None

    def close(self) -> None:
        pass

    def reopen(self) -> None:
        pass


class Runaway(BaseException):
    """The client kept sending long after any sane exchange would have ended."""


class AnsweringLink(FakeLink):
    """Answers every request at once with ``body``, as a device would (same seq and ids).

    After ``budget`` packets it raises :class:`Runaway`, so a client that never gives up is
    caught instead of spinning forever.
    """

    def __init__(self, body: Any, budget: int = 2000) -> None:
        super().__init__()
        self.body = body
        self.budget = budget

    def send(self, packet: bytes) -> None:
        super().send(packet)
        if len(self.sent) > self.budget:
            raise Runaway(f"{len(self.sent)} packets sent")
        payload = cbor2.dumps(self.body)
        op, version, _f, _l, group, seq, command = sf.unpack_header(packet)
        self.rx.append(
            sf.pack_header(op | 1, version, 0, len(payload), group, seq, command) + payload
        )


# Not the upload: it loops on some replies (see test_upload_gives_up_on_a_device_stuck_at_...).
CLIENT_COMMANDS: Final = ("params", "image_state", "state_write", "echo", "slot_info")


def run_command(client: Any, command: str) -> Any:
    """One SmpClient request-reply command."""
    if command == "params":
        return client.params()
    if command == "image_state":
        return client.image_state()
    if command == "state_write":
        return client.state_write(b"\x01" * 32, confirm=False)
    if command == "echo":
        return client.echo("hello")
    assert command == "slot_info"
    return client.slot_info()
