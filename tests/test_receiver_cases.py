"""Fixed cases for the MCU's SMP server and receiver loop, on in-memory flash: group errors
per SMP version, replies that load into the `smp` package's response models, the console
packet limit, responses and unknown ops, random bytes, and the same replies from MicroPython.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from hashlib import sha256
from typing import Any, Final

import cbor2
import pytest
from mpy import run_micropython
from receiver_kit import BUF_SIZE, Device, Images, chunked, console_replies, drain, make_device
from receiver_kit import images as images
from smp import header as smphdr
from smp.image_management import (
    ImageManagementErrorV2,
    ImageStatesReadResponse,
    ImageUploadWriteResponse,
)
from smp.os_management import EchoWriteResponse, MCUMgrParametersReadResponse
from smpclient.requests.image_management import (
    ImageErase,
    ImageStatesRead,
    ImageStatesWrite,
    ImageUploadWrite,
)
from smpclient.requests.os_management import (
    BootloaderInformationRead,
    EchoWrite,
    MCUMgrParametersRead,
    ResetWrite,
)

from bootloader.formats.layout import Layout
from mcu import smp_frame as sf

# -- fixed cases ------------------------------------------------------------------------


def one_reply(device: Device, request: Any) -> bytes:
    receiver = device.receiver([sf.encode_console(request.BYTES)])
    drain(receiver)
    (reply,) = console_replies(receiver.port.tx)
    return reply


def body(reply: bytes) -> Any:
    return cbor2.loads(reply[sf.HEADER_SIZE :])


@pytest.mark.parametrize(
    ("request_factory", "v2_err", "v1_rc"),
    [
        # test without a hash: INVALID_HASH -> EINVAL
        (lambda v: ImageStatesWrite(confirm=False, version=v), (1, 24), sf.RC_EINVAL),
        # an unknown hash: HASH_NOT_FOUND -> EUNKNOWN
        (lambda v: ImageStatesWrite(hash=b"\x00" * 32, version=v), (1, 8), sf.RC_EUNKNOWN),
        # upload without "len": INVALID_LENGTH -> EINVAL
        (lambda v: ImageUploadWrite(off=0, data=b"\xff" * 40, version=v), (1, 21), sf.RC_EINVAL),
        # an unanswerable bootloader query: QUERY_YIELDS_NO_ANSWER -> ENOENT
        (lambda v: BootloaderInformationRead(query="x", version=v), (0, 3), sf.RC_ENOENT),
    ],
)
def test_group_errors_per_protocol_version(
    tiny: Layout,
    images: Images,
    request_factory: Callable[[smphdr.Version], Any],
    v2_err: tuple[int, int],
    v1_rc: int,
) -> None:
    device = make_device(tiny, images.v1)
    group, rc = v2_err
    v2 = one_reply(device, request_factory(smphdr.Version.V2))
    assert body(v2) == {"err": {"group": group, "rc": rc}}
    if group == 1:
        ImageManagementErrorV2.loads(v2)
    v1 = one_reply(device, request_factory(smphdr.Version.V1))
    assert v1[0] >> 3 & 3 == sf.VERSION_1
    assert body(v1) == {"rc": v1_rc}


def test_replies_load_into_the_smp_response_models(tiny: Layout, images: Images) -> None:
    device = make_device(tiny, images.v1)
    echo = EchoWriteResponse.loads(one_reply(device, EchoWrite(d="ping")))
    assert echo.r == "ping"
    params = MCUMgrParametersReadResponse.loads(one_reply(device, MCUMgrParametersRead()))
    assert (params.buf_size, params.buf_count) == (BUF_SIZE, 4)
    first = ImageUploadWrite(off=0, data=images.v2[:100], len=len(images.v2))
    assert ImageUploadWriteResponse.loads(one_reply(device, first)).off == 100
    rest = ImageUploadWrite(off=100, data=images.v2[100:])
    assert ImageUploadWriteResponse.loads(one_reply(device, rest)).off == len(images.v2)
    states = ImageStatesReadResponse.loads(one_reply(device, ImageStatesRead()))
    assert [(s.slot, s.version, s.hash) for s in states.images] == [
        (0, "1.0.0", images.v1_hash),
        (1, "2.0.0", images.v2_hash),
    ]
    assert (states.images[0].active, states.images[0].confirmed) == (True, True)


def test_console_packets_are_limited_to_buf_size_less_4(tiny: Layout, images: Images) -> None:
    # Zephyr's netbuf holds the frame's length and CRC too; smpclient sends exactly this much.
    def echo_of_size(size: int) -> EchoWrite:
        overhead = len(EchoWrite(d="x" * 1000).BYTES) - 1000
        echo = EchoWrite(d="x" * (size - overhead), sequence=size & 0xFF)
        assert len(echo.BYTES) == size
        return echo

    device = make_device(tiny, images.v1)
    too_big, largest = echo_of_size(BUF_SIZE - 3), echo_of_size(BUF_SIZE - 4)
    frames = [sf.encode_console(too_big.BYTES), sf.encode_console(largest.BYTES)]
    receiver = device.receiver(frames)
    drain(receiver)
    (reply,) = console_replies(receiver.port.tx)
    assert EchoWriteResponse.loads(reply).r == largest.d


@pytest.mark.parametrize("op", [sf.OP_READ_RSP, sf.OP_WRITE_RSP, 4, 7])
def test_responses_and_unknown_ops_get_enotsup(tiny: Layout, images: Images, op: int) -> None:
    device = make_device(tiny, images.v1)
    packet = bytearray(EchoWrite(d="hi", sequence=9).BYTES)
    packet[0] = (packet[0] & ~7) | op
    reply = device.server.handle(bytes(packet))
    assert reply is not None
    assert sf.unpack_header(reply)[0] == sf.OP_WRITE_RSP
    assert body(reply) == {"rc": sf.RC_ENOTSUP}


def test_random_bytes_never_raise(tiny: Layout, images: Images) -> None:
    device = make_device(tiny, images.v1)
    rng = random.Random(1)
    noise = bytes(rng.getrandbits(8) for _ in range(20000))
    for framing in ("console", "raw"):
        cuts = [rng.randrange(len(noise)) for _ in range(50)]
        receiver = device.receiver(chunked(noise, cuts), framing, clock=lambda: 0)
        drain(receiver)


GUEST: Final = r"""
import binascii
from mcu.flash_area import RamArea
from mcu.receiver import Receiver, make_server

class Port:
    def __init__(self, data):
        self.data = data
        self.out = bytearray()
    def read(self, n):
        chunk = self.data[:n]
        self.data = self.data[n:]
        return chunk or None
    def write(self, data):
        self.out.extend(data)

primary = RamArea(%(p0)d, %(ss)d, %(ws)d)
secondary = RamArea(%(p1)d, %(ss)d, %(ws)d)
primary.write(0, binascii.unhexlify(%(v1)r))
resets = []
server = make_server(primary, secondary, lambda: resets.append(1), %(ma)d, %(ts)d, %(mode)r)
port = Port(binascii.unhexlify(%(wire)r))
receiver = Receiver(port, server, "console")
for _ in range(%(limit)d):
    if not receiver.poll():
        break
print(binascii.hexlify(port.out).decode(), len(resets))
"""


def test_micropython_gives_the_same_replies(tiny: Layout, images: Images) -> None:

    v2 = images.v2
    requests: list[Any] = [
        EchoWrite(d="µPython"),
        MCUMgrParametersRead(version=smphdr.Version.V1),
        ImageUploadWrite(off=0, data=v2[:500], len=len(v2), sha=sha256(v2).digest()),
        *[ImageUploadWrite(off=off, data=v2[off : off + 500]) for off in range(500, len(v2), 500)],
        ImageStatesWrite(hash=images.v2_hash),
        ImageStatesWrite(hash=b"\x00" * 32),
        ImageStatesWrite(hash=b"\x00" * 32, version=smphdr.Version.V1),
        ImageErase(),
        ImageStatesRead(),
        ResetWrite(),
    ]
    wire = b"".join(sf.encode_console(r.BYTES) for r in requests)
    v1 = images.v1 + b"\xff" * (-len(images.v1) % tiny.write_size)
    code = GUEST % {
        "p0": tiny.slot0.size,
        "p1": tiny.slot1.size,
        "ss": tiny.sector_size,
        "ws": tiny.write_size,
        "v1": v1.hex(),
        "ma": tiny.max_align,
        "ts": tiny.trailer_size(),
        "mode": tiny.mode,
        "wire": wire.hex(),
        "limit": len(wire) // 64 + 10,
    }
    stdout, _fuel = run_micropython(code)
    out_hex, resets = stdout.split()
    expected = make_device(tiny, images.v1).receiver([wire])
    drain(expected)
    mine = console_replies(bytes.fromhex(out_hex))
    theirs = console_replies(expected.port.tx)
    assert len(mine) == len(requests) and resets == "1"
    # Same headers and the same CBOR values (MicroPython dicts do not keep key order).
    assert [m[:8] for m in mine] == [t[: len(m[:8])] for t, m in zip(theirs, mine, strict=True)]
    assert [cbor2.loads(m[8:]) for m in mine] == [cbor2.loads(t[8:]) for t in theirs]
