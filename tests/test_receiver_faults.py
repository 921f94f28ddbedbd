"""The receiver never dies of one bad operation (mcu/smp_server.py, mcu/img_mgmt.py).

A flash area that fails on command stands in for a driver error.  Every failure must come
back as an SMP error reply carrying Zephyr's code, the loop must go on answering, and an
upload's offset must never move past data that did not reach flash.  The expected codes come
from the smp package's enums (MGMT_ERR, IMG_MGMT_ERR: transcriptions of Zephyr's mgmt.h and
img_mgmt.h), not from the receiver.  The same scenario runs under MicroPython.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

import cbor2
import pytest
from fuzz_rigs import FakePort
from smp.error import MGMT_ERR
from smp.image_management import IMG_MGMT_ERR
from smpclient.requests.image_management import ImageErase, ImageStatesRead, ImageUploadWrite
from smpclient.requests.os_management import EchoWrite

from bootloader.formats.layout import Layout
from mcu import smp_frame as sf
from mcu.flash_area import RamArea
from mcu.receiver import Receiver, make_server
from tests.mpy import run_micropython

CHUNK = 256


class FaultyArea(RamArea):
    """A RAM flash area whose read, write or erase raise OSError while named in ``broken``."""

    def __init__(self, size: int, sector_size: int, write_size: int) -> None:
        super().__init__(size, sector_size, write_size)
        self.broken: set[str] = set()

    def _check(self, op: str) -> None:
        if op in self.broken:
            raise OSError(5, f"flash {op} failed")  # EIO, as a MicroPython driver raises

    def read(self, off: int, n: int) -> bytes:
        self._check("read")
        return super().read(off, n)  # type: ignore[no-any-return]

    def write(self, off: int, data: Any) -> None:
        self._check("write")
        super().write(off, data)

    def erase(self, off: int, n: int) -> None:
        self._check("erase")
        super().erase(off, n)


class Rig:
    def __init__(self, layout: Layout, running: bytes) -> None:
        self.primary = RamArea(layout.slot0.size, layout.sector_size, layout.write_size)
        self.primary.write(0, running + b"\xff" * (-len(running) % layout.write_size))
        self.secondary = FaultyArea(layout.slot1.size, layout.sector_size, layout.write_size)
        self.server = make_server(
            self.primary,
            self.secondary,
            lambda: None,
            layout.max_align,
            layout.trailer_size(),
            layout.mode,
        )

    def call(self, request: Any) -> dict[str, Any]:
        reply = self.server.handle(request.BYTES)
        assert reply is not None
        value = cbor2.loads(reply[sf.HEADER_SIZE :])
        assert isinstance(value, dict)
        return value


def group_err(rsp: dict[str, Any]) -> int:
    assert set(rsp) == {"err"} and rsp["err"]["group"] == 1, rsp
    return int(rsp["err"]["rc"])


def test_a_write_error_fails_the_chunk_and_the_upload_starts_over(
    tiny: Layout, tiny_pair: tuple[bytes, bytes]
) -> None:
    v1, v2 = tiny_pair
    rig = Rig(tiny, v1)
    sha = sha256(v2).digest()
    first = ImageUploadWrite(off=0, data=v2[:CHUNK], len=len(v2), sha=sha)
    assert rig.call(first) == {"off": CHUNK}
    rig.secondary.broken = {"write"}
    second = ImageUploadWrite(off=CHUNK, data=v2[CHUNK : 2 * CHUNK])
    assert group_err(rig.call(second)) == IMG_MGMT_ERR.FLASH_WRITE_FAILED
    # The offset did not advance past the lost chunk: the session ended, start from 0.
    assert rig.call(second) == {"off": 0}
    assert rig.call(EchoWrite(d="still here")) == {"r": "still here"}
    rig.secondary.broken = set()
    rsp = rig.call(first)
    while rsp["off"] < len(v2):
        off = rsp["off"]
        rsp = rig.call(ImageUploadWrite(off=off, data=v2[off : off + CHUNK]))
    assert rsp == {"off": len(v2), "match": True}
    assert rig.secondary.read(0, len(v2)) == v2


def test_an_erase_error_fails_the_first_chunk_and_erase(
    tiny: Layout, tiny_pair: tuple[bytes, bytes]
) -> None:
    v1, v2 = tiny_pair
    rig = Rig(tiny, v1)
    rig.secondary.broken = {"erase"}
    first = ImageUploadWrite(off=0, data=v2[:CHUNK], len=len(v2), sha=sha256(v2).digest())
    assert group_err(rig.call(first)) == IMG_MGMT_ERR.FLASH_ERASE_FAILED
    assert group_err(rig.call(ImageErase(slot=1))) == IMG_MGMT_ERR.FLASH_ERASE_FAILED
    rig.secondary.broken = set()
    assert rig.call(first) == {"off": CHUNK}


@pytest.mark.parametrize("version", [sf.VERSION_1, sf.VERSION_2], ids=["smpv1", "smpv2"])
def test_an_unexpected_read_error_is_mgmt_err_eunknown(
    tiny: Layout, tiny_pair: tuple[bytes, bytes], version: int
) -> None:
    v1, _v2 = tiny_pair
    rig = Rig(tiny, v1)
    rig.secondary.broken = {"read"}
    body = cbor2.dumps({})
    packet = sf.pack_header(sf.OP_READ, version, 0, len(body), 1, 9, 0) + body
    reply = rig.server.handle(packet)
    assert reply is not None
    assert sf.unpack_header(reply)[1] == version
    assert cbor2.loads(reply[sf.HEADER_SIZE :]) == {"rc": MGMT_ERR.EUNKNOWN}
    rig.secondary.broken = set()
    assert [s["slot"] for s in rig.call(ImageStatesRead())["images"]] == [0]


def test_the_receiver_loop_answers_every_request_through_failures(
    tiny: Layout, tiny_pair: tuple[bytes, bytes]
) -> None:
    v1, v2 = tiny_pair
    rig = Rig(tiny, v1)
    rig.secondary.broken = {"read", "write", "erase"}
    requests = [
        EchoWrite(d="a"),
        ImageStatesRead(),
        ImageUploadWrite(off=0, data=v2[:CHUNK], len=len(v2), sha=sha256(v2).digest()),
        ImageErase(slot=1),
        EchoWrite(d="b"),
    ]
    wire = b"".join(sf.encode_console(r.BYTES) for r in requests)
    port = FakePort([wire[i : i + 100] for i in range(0, len(wire), 100)])
    receiver = Receiver(port, rig.server, "console")
    for _ in range(len(wire)):
        if not receiver.poll():
            break
    decoder = sf.ConsoleDecoder(tiny.max_align * 4096)
    replies = [cbor2.loads(bytes(p)[sf.HEADER_SIZE :]) for p in decoder.feed(bytes(port.tx))]
    assert replies[0] == {"r": "a"} and replies[-1] == {"r": "b"}
    assert replies[1] == {"rc": MGMT_ERR.EUNKNOWN}
    assert len(replies) == len(requests) and all(set(r) in ({"err"}, {"rc"}) for r in replies[1:4])


MPY_SCRIPT = r"""
from mcu import smp_frame as sf
from mcu import cbor
from mcu.flash_area import RamArea
from mcu.receiver import Receiver, make_server


class Faulty(RamArea):
    def __init__(self, *a):
        RamArea.__init__(self, *a)
        self.broken = ()

    def read(self, off, n):
        if "read" in self.broken:
            raise OSError(5)
        return RamArea.read(self, off, n)

    def write(self, off, data):
        if "write" in self.broken:
            raise OSError(5)
        RamArea.write(self, off, data)


class Port:
    def __init__(self, data):
        self.rx = data
        self.tx = bytearray()

    def read(self, n):
        data, self.rx = self.rx[:n], self.rx[n:]
        return data or None

    def write(self, data):
        self.tx.extend(data)


def req(op, seq, group, command, body):
    p = cbor.encode(body)
    return sf.encode_console(sf.pack_header(op, 1, 0, len(p), group, seq, command) + p)


primary = RamArea(4096, 512, 8)
secondary = Faulty(4096, 512, 8)
server = make_server(primary, secondary, lambda: None, 8, 1024, "swap-move")
secondary.broken = ("read", "write")
wire = (req(2, 0, 0, 0, {"d": "a"}) + req(0, 1, 1, 0, {}) + req(2, 2, 0, 0, {"d": "b"}))
port = Port(wire)
rx = Receiver(port, server, "console")
while rx.poll():
    pass
dec = sf.ConsoleDecoder(4096)
for p in dec.feed(bytes(port.tx)):
    v = cbor.decode(p, sf.HEADER_SIZE)
    print(sorted(v.items()))
"""


def test_the_receiver_survives_a_flash_error_under_micropython() -> None:
    stdout, _ = run_micropython(MPY_SCRIPT)
    assert stdout.splitlines() == [
        "[('r', 'a')]",
        f"[('rc', {int(MGMT_ERR.EUNKNOWN)})]",
        "[('r', 'b')]",
    ]
