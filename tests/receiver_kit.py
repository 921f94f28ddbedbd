"""What the receiver tests share: a device (the MCU's SMP server) on RAM flash, a serial
port made of queued chunks, the signed test images, and decoding of the console replies.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
from smp import packet as smppacket

from bootloader.formats.image import parse_image
from bootloader.formats.layout import Layout
from mcu import smp_frame as sf
from mcu.flash_area import RamArea
from mcu.receiver import Receiver, make_server

BUF_SIZE: Final = 2048


# -- a device on RAM flash, and a serial port made of queued chunks ----------------------


class FakePort:
    """The receiver's port: read() hands out the queued chunks, write() collects."""

    def __init__(self, chunks: Sequence[bytes] = ()) -> None:
        self.rx: deque[bytes] = deque(chunks)
        self.tx = bytearray()

    def read(self, n: int) -> bytes | None:
        if not self.rx:
            return None
        chunk = self.rx.popleft()
        if len(chunk) > n:
            self.rx.appendleft(chunk[n:])
            chunk = chunk[:n]
        return chunk

    def write(self, data: bytes) -> None:
        self.tx += data


@dataclass
class Device:
    layout: Layout
    primary: RamArea
    secondary: RamArea
    server: Any
    resets: list[int] = field(default_factory=list)

    def receiver(self, chunks: Sequence[bytes], framing: str = "console", **kw: Any) -> Receiver:
        return Receiver(FakePort(chunks), self.server, framing, **kw)


def make_device(layout: Layout, running: bytes) -> Device:
    primary = RamArea(layout.slot0.size, layout.sector_size, layout.write_size)
    secondary = RamArea(layout.slot1.size, layout.sector_size, layout.write_size)
    pad = b"\xff" * (-len(running) % layout.write_size)
    primary.write(0, running + pad)
    device = Device(layout, primary, secondary, None)
    device.server = make_server(
        primary,
        secondary,
        lambda: device.resets.append(1),
        layout.max_align,
        layout.trailer_size(),
        layout.mode,
        BUF_SIZE,
        4,
    )
    return device


def drain(receiver: Receiver) -> int:
    """Poll until the port is empty; bounded by the number of chunks queued."""
    port = receiver.port
    assert isinstance(port, FakePort)
    limit = sum(len(c) // sf.HEADER_SIZE + 1 for c in port.rx) + 2
    polls = 0
    while receiver.poll():
        polls += 1
        assert polls <= limit, "the receiver keeps reading past its input"
    return polls


def console_replies(tx: bytes) -> list[bytes]:
    """Split console output into packets with the `smp` package's decoder."""
    frames = []
    decoder = None
    for line in bytes(tx).splitlines(keepends=True):
        if decoder is None:
            decoder = smppacket.decode()
            next(decoder)
        try:
            decoder.send(line)
        except StopIteration as stop:
            frames.append(stop.value)
            decoder = None
    assert decoder is None, "a reply was cut short"
    return frames


@dataclass(frozen=True)
class Images:
    v1: bytes
    v2: bytes
    v1_hash: bytes
    v2_hash: bytes


@pytest.fixture(scope="module")
def images(tiny_pair: tuple[bytes, bytes]) -> Images:
    v1, v2 = tiny_pair
    h1, h2 = parse_image(v1).sha256_tlv, parse_image(v2).sha256_tlv
    assert h1 is not None and h2 is not None
    return Images(v1, v2, h1, h2)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]
