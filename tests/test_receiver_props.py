"""Property tests of the MCU's SMP server and receiver loop, on in-memory flash.

Whatever arrives on the serial line, the receiver must not raise or stall, and must answer
as Zephyr's SMP server does (smp.c, built without CONFIG_SMP_CLIENT): every packet of 8 bytes
or more gets exactly one reply carrying its group, sequence and command id, with READ_RSP
for a read and WRITE_RSP for anything else; only shorter packets, and frames the transport
drops (bad CRC, bad base64, too long), are met with silence.  The replies are checked with
the `smp` package's own response models, the way smpclient validates them.
"""

from __future__ import annotations

import io
import itertools
import random
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from hashlib import sha256
from typing import Any, Final

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpy import run_micropython
from pydantic import ValidationError
from smp import header as smphdr
from smp import message as smpmsg
from smp import packet as smppacket
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

from bootloader.formats.image import parse_image
from bootloader.formats.layout import Layout
from mcu import smp_frame as sf
from mcu.flash_area import RamArea
from mcu.receiver import Receiver, make_server

BUF_SIZE: Final = 2048
KNOWN: Final = {(0, 0), (0, 5), (0, 6), (0, 8), (1, 0), (1, 1), (1, 5), (1, 6)}
PROPS: Final = settings(
    max_examples=150,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


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


def raw_replies(tx: bytes) -> list[bytes]:
    frames, pos = [], 0
    while pos < len(tx):
        end = pos + sf.HEADER_SIZE + struct.unpack_from(">H", tx, pos + 2)[0]
        assert end <= len(tx), "a reply was cut short"
        frames.append(bytes(tx[pos:end]))
        pos = end
    return frames


def parse_like_smpclient(request: Any, frame: bytes) -> smpmsg.Response:
    """What SMPClient.request makes of a reply: the response, or either error model."""
    for model in (request._Response, request._ErrorV1, request._ErrorV2):
        try:
            return model.loads(frame)  # type: ignore[no-any-return]
        except ValidationError:
            continue
    raise AssertionError(f"no response model of {type(request).__name__} parses {frame!r}")


def cbor_map_or_none(payload: bytes) -> dict[Any, Any] | None:
    """The payload as cbor2 reads it when it is exactly one map, else None."""
    stream = io.BytesIO(payload)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except Exception:
        return None
    if stream.tell() != len(payload) or not isinstance(value, dict):
        return None
    return value


# -- requests ---------------------------------------------------------------------------


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


RequestMaker = Callable[[int, smphdr.Version], Any]


def request_makers(images: Images) -> st.SearchStrategy[RequestMaker]:
    """Real requests, built by the smp/smpclient models; each takes (seq, version)."""
    v2 = images.v2
    hashes = st.sampled_from([images.v1_hash, images.v2_hash, b"\x00" * 32, b"\x01" * 31, None])
    return st.one_of(
        st.text(max_size=40).map(lambda d: lambda s, v: EchoWrite(d=d, sequence=s, version=v)),
        st.just(lambda s, v: MCUMgrParametersRead(sequence=s, version=v)),
        st.just(lambda s, v: ImageStatesRead(sequence=s, version=v)),
        st.sampled_from([None, "nope"]).map(
            lambda q: lambda s, v: BootloaderInformationRead(query=q, sequence=s, version=v)
        ),
        st.tuples(hashes, st.booleans()).map(
            lambda hc: (
                lambda s, v: ImageStatesWrite(hash=hc[0], confirm=hc[1], sequence=s, version=v)
            )
        ),
        st.tuples(st.integers(0, 300), st.booleans(), st.booleans()).map(
            lambda a: (
                lambda s, v: ImageUploadWrite(
                    off=0,
                    data=v2[: a[0]],
                    len=len(v2),
                    sha=v2[:32] if a[1] else None,
                    upgrade=a[2],
                    sequence=s,
                    version=v,
                )
            )
        ),
        st.tuples(st.integers(1, len(v2)), st.integers(0, 300)).map(
            lambda a: (
                lambda s, v: ImageUploadWrite(
                    off=a[0], data=v2[a[0] : a[0] + a[1]], sequence=s, version=v
                )
            )
        ),
        st.sampled_from([None, 0, 1, 2]).map(
            lambda slot: lambda s, v: ImageErase(slot=slot, sequence=s, version=v)
        ),
        st.just(lambda s, v: ResetWrite(sequence=s, version=v)),
    )


versions = st.sampled_from([smphdr.Version.V1, smphdr.Version.V2])


@st.composite
def request_batches(draw: st.DrawFn, images: Images, max_size: int = 6) -> list[Any]:
    """A few requests with distinct sequence numbers."""
    makers = draw(st.lists(request_makers(images), min_size=1, max_size=max_size))
    seqs = draw(
        st.lists(st.integers(0, 255), min_size=len(makers), max_size=len(makers), unique=True)
    )
    return [make(seq, draw(versions)) for make, seq in zip(makers, seqs, strict=True)]


noise_lines = (
    st.binary(max_size=200)
    .map(lambda b: b.replace(b"\n", b"") + b"\n")
    .filter(lambda line: line[:2] not in (b"\x06\x09", b"\x04\x14"))
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


# -- the server: any packet ---------------------------------------------------------------


@st.composite
def packets(draw: st.DrawFn, images: Images) -> bytes:
    """Random bytes, or a real request with its header or payload tampered with."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=80))
    request = draw(request_makers(images))(draw(st.integers(0, 255)), draw(versions))
    data = bytearray(request.BYTES)
    what = draw(st.sampled_from(["none", "op", "version", "length", "ids", "payload", "cut"]))
    if what == "op":
        data[0] = (data[0] & ~7) | draw(st.integers(0, 7))
    elif what == "version":
        data[0] = (data[0] & ~0x18) | (draw(st.integers(0, 3)) << 3)
    elif what == "length":
        struct.pack_into(">H", data, 2, draw(st.integers(0, 0xFFFF)))
    elif what == "ids":
        struct.pack_into(">H", data, 4, draw(st.integers(0, 12)))
        data[7] = draw(st.integers(0, 12))
    elif what == "payload" and len(data) > sf.HEADER_SIZE:
        i = draw(st.integers(sf.HEADER_SIZE, len(data) - 1))
        data[i] ^= draw(st.integers(1, 255))
    elif what == "cut":
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


def test_any_packet_gets_the_reply_zephyr_gives(tiny: Layout, images: Images) -> None:
    @PROPS
    @given(packet=packets(images))
    def check(packet: bytes) -> None:
        device = make_device(tiny, images.v1)
        reply = device.server.handle(packet)
        if len(packet) < sf.HEADER_SIZE:
            assert reply is None
            return
        op, ver, _flags, length, group, seq, cmd = sf.unpack_header(packet)
        assert reply is not None
        rop, rver, rflags, rlen, rgroup, rseq, rcmd = sf.unpack_header(reply)
        assert (rgroup, rseq, rcmd) == (group, seq, cmd)
        assert rop == (sf.OP_READ_RSP if op == sf.OP_READ else sf.OP_WRITE_RSP)
        assert rver == min(ver, sf.VERSION_2) and rflags == 0
        assert rlen == len(reply) - sf.HEADER_SIZE
        body = cbor_map_or_none(reply[sf.HEADER_SIZE :])
        assert body is not None
        payload = packet[sf.HEADER_SIZE : sf.HEADER_SIZE + length]
        if sf.HEADER_SIZE + length > len(packet):
            assert body == {"rc": sf.RC_ECORRUPT}
        elif op not in (sf.OP_READ, sf.OP_WRITE):
            assert body == {"rc": sf.RC_ENOTSUP}
        elif ver > sf.VERSION_2:
            assert body == {"rc": sf.RC_UNSUPPORTED_TOO_NEW}
        elif (group, cmd) not in KNOWN:
            assert body == {"rc": sf.RC_ENOTSUP}
        elif payload and cbor_map_or_none(payload) is None:
            assert body == {"rc": sf.RC_EINVAL}
        if ver == sf.VERSION_1:
            assert "err" not in body  # SMPv1 has no group errors, only legacy rc

    check()


# -- the receiver: streams of frames ------------------------------------------------------


def test_every_framed_request_is_answered_once_in_order(tiny: Layout, images: Images) -> None:
    @PROPS
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        requests = data.draw(request_batches(images))
        stream = bytearray()
        for request in requests:
            stream += b"".join(data.draw(st.lists(noise_lines, max_size=2)))
            if data.draw(st.booleans()):
                # A frame cut off after its first lines: the next start line drops it.
                cut = data.draw(request_makers(images))(0, data.draw(versions))
                frame = sf.encode_console(cut.BYTES)
                lines = frame.splitlines(keepends=True)
                stream += b"".join(lines[: data.draw(st.integers(0, len(lines) - 1))])
            stream += b"".join(smppacket.encode(request.BYTES, line_length=127))
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
        device = make_device(tiny, images.v1)
        receiver = device.receiver(chunked(bytes(stream), cuts))
        drain(receiver)
        replies = console_replies(receiver.port.tx)
        assert len(replies) == len(requests)
        for request, reply in zip(requests, replies, strict=True):
            head = request.header
            rhead = smphdr.Header.loads(reply[: sf.HEADER_SIZE])
            assert (rhead.group_id, rhead.sequence, rhead.command_id) == (
                head.group_id,
                head.sequence,
                head.command_id,
            )
            assert rhead.op == head.op + 1 and rhead.version == head.version
            parse_like_smpclient(request, reply)
        assert len(device.resets) == sum(isinstance(r, ResetWrite) for r in requests)

    check()


def test_mutated_streams_never_raise_and_answer_only_intact_requests(
    tiny: Layout, images: Images
) -> None:
    @PROPS
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        requests = data.draw(request_batches(images, max_size=4))
        stream = bytearray(b"".join(sf.encode_console(r.BYTES) for r in requests))
        for _ in range(data.draw(st.integers(1, 6))):
            if not stream:
                break
            i = data.draw(st.integers(0, len(stream) - 1))
            kind = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
            if kind == "flip":
                stream[i] ^= data.draw(st.integers(1, 255))
            elif kind == "delete":
                del stream[i]
            elif kind == "insert":
                stream.insert(i, data.draw(st.integers(0, 255)))
            else:
                del stream[i:]
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
        device = make_device(tiny, images.v1)
        receiver = device.receiver(chunked(bytes(stream), cuts))
        drain(receiver)
        by_seq = {r.header.sequence: r for r in requests}
        replies = console_replies(receiver.port.tx)
        seqs = [smphdr.Header.loads(r[: sf.HEADER_SIZE]).sequence for r in replies]
        assert len(set(seqs)) == len(seqs) and set(seqs) <= set(by_seq)
        for seq, reply in zip(seqs, replies, strict=True):
            parse_like_smpclient(by_seq[seq], reply)

    check()


def test_raw_framing_streams(tiny: Layout, images: Images) -> None:
    @PROPS
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        requests = data.draw(request_batches(images))
        now = [0]
        device = make_device(tiny, images.v1)
        head = b""
        if data.draw(st.booleans()):
            # A packet cut short, then a quiet line: the receiver drops what it holds.
            cut = data.draw(request_makers(images))(0, smphdr.Version.V2).BYTES
            head = cut[: data.draw(st.integers(1, len(cut) - 1))]
        stream = b"".join(r.BYTES for r in requests)
        receiver = device.receiver(
            chunked(head, []), "raw", clock=lambda: now[0], raw_timeout_ms=3000
        )
        drain(receiver)
        now[0] += 3000
        receiver.poll()  # the idle gap is noticed on an empty read
        receiver.port.rx.extend(chunked(stream, data.draw(st.lists(st.integers(0, len(stream))))))
        drain(receiver)
        replies = raw_replies(receiver.port.tx)
        assert len(replies) == len(requests)
        for request, reply in zip(requests, replies, strict=True):
            assert smphdr.Header.loads(reply[: sf.HEADER_SIZE]).sequence == request.header.sequence
            parse_like_smpclient(request, reply)

    check()


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
