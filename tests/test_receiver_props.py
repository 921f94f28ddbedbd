"""Property tests of the MCU's SMP server and receiver loop, on in-memory flash.

Whatever arrives on the serial line, the receiver must not raise or stall, and must answer
as Zephyr's SMP server does (smp.c, built without CONFIG_SMP_CLIENT): every packet of 8 bytes
or more gets exactly one reply carrying its group, sequence and command id, with READ_RSP
for a read and WRITE_RSP for anything else; only shorter packets, and frames the transport
drops (bad CRC, bad base64, too long), are met with silence.  The replies are checked with
the `smp` package's own response models, the way smpclient validates them.

The fixed cases are in test_receiver_cases.py.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from receiver_kit import Images, chunked, console_replies, drain, make_device
from receiver_kit import images as images
from smp import header as smphdr
from smp import message as smpmsg
from smp import packet as smppacket
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

KNOWN: Final = {(0, 0), (0, 5), (0, 6), (0, 8), (1, 0), (1, 1), (1, 5), (1, 6)}
PROPS: Final = settings(
    max_examples=150,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


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
