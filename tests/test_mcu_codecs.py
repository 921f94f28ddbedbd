"""The microcontroller's codecs (mcu.cbor, mcu.smp_frame, mcu.crc16) on CPython.

Wire formats are locked against the reference implementations: Zephyr's worked example,
the `smp` package's encoder and decoder, cbor2 and crcmod; Zephyr's own transmitter and
receiver are modelled line for line from serial_util.c and compared on generated input.
"""

from __future__ import annotations

import binascii
import contextlib
import math
import random
import struct
from collections.abc import Callable, Iterator
from typing import Any

import cbor2
import crcmod.predefined  # type: ignore[import-untyped]
import pytest
import smp.packet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smp.header import Header
from smp.image_management import (
    ImageState,
    ImageStatesReadRequest,
    ImageStatesReadResponse,
    ImageUploadWriteRequest,
    ImageUploadWriteResponse,
)
from smp.os_management import EchoWriteRequest, MCUMgrParametersReadRequest, ResetWriteRequest

from mcu import cbor
from mcu import smp_frame as sf
from mcu.crc16 import _table_crc, crc16_xmodem

ECHO_HI_PACKET = bytes.fromhex("0a00000600000000a16164626869")
ECHO_HI_WIRE = b"\x06\x09ABAKAAAGAAAAAKFhZGJoaeJ8\n"
xmodem: Callable[[bytes], int] = crcmod.predefined.mkPredefinedCrcFun("xmodem")
EXAMPLES = 500


def pattern(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def smp_requests() -> list[bytes]:
    """Packets built by the `smp` package: requests a host sends and responses it reads."""
    return [
        EchoWriteRequest(d="hi", sequence=0).BYTES,
        ImageStatesReadRequest(sequence=1).BYTES,
        MCUMgrParametersReadRequest(sequence=2).BYTES,
        ResetWriteRequest(sequence=3).BYTES,
        ImageUploadWriteRequest(
            off=0,
            data=pattern(2048),
            len=123456,
            sha=pattern(32, 2),
            image=0,
            upgrade=False,
            sequence=4,
        ).BYTES,
        ImageUploadWriteRequest(off=2048, data=pattern(2048, 3), sequence=5).BYTES,
        ImageUploadWriteRequest(off=4096, data=pattern(1, 4), sequence=6).BYTES,
        ImageUploadWriteResponse(off=4097, sequence=7).BYTES,
        ImageStatesReadResponse(
            images=[
                ImageState(
                    slot=0,
                    version="1.0.0",
                    hash=pattern(32, 5),
                    active=True,
                    confirmed=True,
                    bootable=True,
                ),
                ImageState(slot=1, version="2.0.0", hash=pattern(32, 6), pending=True),
            ],
            sequence=8,
        ).BYTES,
    ]


def smp_decode(lines: list[bytes]) -> bytes:
    """The packet the `smp` package's decoder makes of `lines` (it is sent one line at a time)."""
    decoder = smp.packet.decode()
    next(decoder)
    for line in lines:
        try:
            decoder.send(line)
        except StopIteration as stop:
            result: bytes = stop.value
            return result
    raise AssertionError("smp.packet.decode wanted more lines")


def feed_in_chunks(
    decoder: sf.ConsoleDecoder | sf.RawDecoder, wire: bytes, sizes: Iterator[int]
) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    while pos < len(wire):
        n = next(sizes)
        out += [bytes(p) for p in decoder.feed(wire[pos : pos + n])]
        pos += n
    return out


def cycle(*sizes: int) -> Iterator[int]:
    while True:
        yield from sizes


# ---------------------------------------------------------------------------------------------
# Reference models, written from Zephyr's subsys/mgmt/mcumgr/transport/src/serial_util.c


def zephyr_tx(packet: bytes, max_frame: int = 127) -> bytes:
    """mcumgr_serial_tx_pkt, step for step: base64 emitted 3 bytes (4 characters) at a time."""
    out = bytearray()

    def small(raw: bytes) -> None:
        out.extend(binascii.b2a_base64(raw, newline=False))

    crc = xmodem(packet)
    n = len(packet)
    max_input = ((max_frame - 3) >> 2) * 3
    marker = b"\x06\x09"
    first = True
    src = 0
    while src < n:
        out.extend(marker)
        if first:
            small(struct.pack(">H", n + 2) + packet[0:1])
            src += 1
            max_input -= 3
        to_process = min(max_input, n - src)
        reminder = max_input - (n - src)
        last = False
        if reminder in (0, 1):
            to_process -= 1
        elif reminder >= 2:
            last = True
        while to_process >= 3:
            small(packet[src : src + 3])
            src += 3
            to_process -= 3
        if last:
            left = n - src
            if left == 0:
                small(struct.pack(">H", crc))
            elif left == 1:
                small(packet[src : src + 1] + struct.pack(">H", crc))
            else:
                small(packet[src : src + 2] + bytes([crc >> 8]))
                small(bytes([crc & 0xFF]))
            src = n
        out.extend(b"\n")
        marker = b"\x04\x14"
        first = False
    return bytes(out)


class ZephyrRx:
    """uart_mcumgr's line buffer plus mcumgr_serial_process_frag, per-line strict base64.

    The one departure from Zephyr is the documented one: a line whose base64 ends in a
    partial quad is refused (Zephyr's decoder drops the partial quad and goes on).
    """

    def __init__(self, max_packet: int = sf.DEFAULT_MAX_PACKET, max_line: int = 127) -> None:
        self.cap = max_packet + 2
        self.max_line = max_line
        self.buf = bytearray()  # decoded bytes after the length; empty = no packet
        self.want = 0

    def stream(self, wire: bytes) -> list[bytes]:
        lines = wire.split(b"\n")[:-1]  # a last line without its newline is never seen
        out: list[bytes] = []
        for line in lines:
            if len(line) + 1 <= self.max_line:
                packet = self.frag(line)
                if packet is not None:
                    out.append(packet)
        return out

    def frag(self, line: bytes) -> bytes | None:
        if len(line) < 2:
            return None
        if line[:2] == b"\x06\x09":
            first = True
            self.buf = bytearray()
        elif line[:2] == b"\x04\x14":
            if not self.buf:
                return None
            first = False
        else:
            return None
        text = line[2:]
        if text.endswith(b"\r"):
            text = text[:-1]
        try:
            raw = binascii.a2b_base64(text, strict_mode=True)
        except binascii.Error:
            self.buf = bytearray()
            return None
        if first:
            if len(raw) < 2:
                return None
            self.want = (raw[0] << 8) | raw[1]
            if not 2 <= self.want <= self.cap:
                return None
            raw = raw[2:]
        self.buf += raw
        if len(self.buf) < self.want:
            return None
        packet, self.buf = bytes(self.buf), bytearray()
        if len(packet) > self.want or xmodem(packet) != 0:
            return None
        return packet[:-2]


# ---------------------------------------------------------------------------------------------
# CRC-16/XMODEM


def test_crc_check_value() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert crc16_xmodem(b"") == 0


@pytest.mark.parametrize("n", [0, 1, 2, 47, 63, 64, 65, 103, 577, 1154, 2133, 4096, 9233, 80000])
def test_crc_matches_crcmod_at_every_fold_boundary(n: int) -> None:
    data = pattern(n, n)
    assert crc16_xmodem(data) == xmodem(data) == _table_crc(data, 0)
    assert crc16_xmodem(memoryview(data)) == xmodem(data)
    assert crc16_xmodem(bytearray(data)) == xmodem(data)


@settings(max_examples=EXAMPLES)
@given(st.binary(max_size=3000), st.integers(0, 0xFFFF))
def test_crc_chains_and_ends_at_zero(data: bytes, start: int) -> None:
    assert crc16_xmodem(data) == xmodem(data)
    assert crc16_xmodem(data, start) == _table_crc(data, start)
    cut = len(data) // 3
    assert crc16_xmodem(data[cut:], crc16_xmodem(data[:cut])) == xmodem(data)
    assert crc16_xmodem(data + struct.pack(">H", xmodem(data))) == 0


# ---------------------------------------------------------------------------------------------
# SMP header


def test_header_matches_the_smp_package() -> None:
    for packet in smp_requests():
        theirs = Header.loads(packet[:8])
        op, version, flags, length, group, seq, command = sf.unpack_header(packet)
        assert (op, version, flags, length, group, seq, command) == (
            theirs.op,
            theirs.version,
            theirs.flags,
            theirs.length,
            theirs.group_id,
            theirs.sequence,
            theirs.command_id,
        )
        assert sf.pack_header(op, version, flags, length, group, seq, command) == packet[:8]


def test_header_into_a_buffer_and_from_an_offset() -> None:
    buf = bytearray(12)
    sf.pack_header_into(buf, 2, sf.OP_WRITE_RSP, sf.VERSION_2, 0, 0x1234, 0x40, 255, 7)
    assert bytes(buf[2:10]) == bytes.fromhex("0b00123400 40ff07".replace(" ", ""))
    assert sf.unpack_header(buf, 2) == (3, 1, 0, 0x1234, 0x40, 255, 7)
    # Reserved bits are ignored.
    assert sf.unpack_header(b"\xea" + bytes(7))[:2] == (2, 1)


@pytest.mark.parametrize(
    "fields",
    [
        (8, 0, 0, 0, 0, 0, 0),
        (0, 4, 0, 0, 0, 0, 0),
        (0, 0, 256, 0, 0, 0, 0),
        (0, 0, 0, 65536, 0, 0, 0),
        (0, 0, 0, 0, -1, 0, 0),
        (0, 0, 0, 0, 0, 256, 0),
        (0, 0, 0, 0, 0, 0, 256),
    ],
)
def test_header_fields_out_of_range(fields: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        sf.pack_header(*fields)


def test_header_too_short() -> None:
    with pytest.raises(ValueError):
        sf.unpack_header(bytes(7))
    with pytest.raises(ValueError):
        sf.unpack_header(bytes(8), 1)


# ---------------------------------------------------------------------------------------------
# Console framing: encoder


def test_worked_example() -> None:
    assert crc16_xmodem(ECHO_HI_PACKET) == 0xE27C
    assert EchoWriteRequest(d="hi", sequence=0).BYTES == ECHO_HI_PACKET
    assert sf.encode_console(ECHO_HI_PACKET) == ECHO_HI_WIRE
    assert list(smp.packet.encode(ECHO_HI_PACKET)) == [ECHO_HI_WIRE]
    assert sf.ConsoleDecoder().feed(ECHO_HI_WIRE) == [ECHO_HI_PACKET]


@pytest.mark.parametrize("limit", [15, 16, 20, 64, 127, 128, 200])
def test_encoder_splits_exactly_as_zephyr(limit: int) -> None:
    for n in [*range(1, 400), 2048, 2133, 4000]:
        packet = pattern(n, n)
        assert sf.encode_console(packet, limit) == zephyr_tx(packet, limit), n


def test_encoder_line_shapes() -> None:
    packet = smp_requests()[4]
    lines = sf.encode_console(packet).split(b"\n")[:-1]
    assert lines[0][:2] == b"\x06\x09"
    assert all(line[:2] == b"\x04\x14" for line in lines[1:])
    assert len(lines[0]) + 1 == 127  # 93 bytes: length, then 91 packet bytes
    assert {len(line) + 1 for line in lines[1:-1]} == {123}  # 90 bytes each, as Zephyr
    assert all((len(line) - 2) % 4 == 0 for line in lines)
    assert all(b"=" not in line for line in lines[:-1])


def test_encoder_never_splits_the_crc() -> None:
    # 90 bytes after the first line exactly fill a line: Zephyr moves a group to a new line.
    packet = pattern(91 + 90, 9)
    lines = sf.encode_console(packet).split(b"\n")[:-1]
    assert len(lines) == 3
    assert binascii.a2b_base64(lines[2][2:]) == packet[-3:] + struct.pack(">H", xmodem(packet))


def test_encoder_refuses_empty_packet_and_tiny_lines() -> None:
    with pytest.raises(ValueError):
        sf.encode_console(b"")
    with pytest.raises(ValueError):
        sf.encode_console(b"abc", 14)


@pytest.mark.parametrize("index", range(len(smp_requests())))
def test_our_frames_decode_with_the_smp_package(index: int) -> None:
    packet = smp_requests()[index]
    lines = sf.encode_console(packet).splitlines(keepends=True)
    assert smp_decode(lines) == packet


@pytest.mark.parametrize("n", [1, 2, 3, 88, 89, 90, 91, 92, 93, 94, 181, 182, 183, 184, 2000])
def test_our_frames_of_any_size_decode_with_the_smp_package(n: int) -> None:
    packet = pattern(n, n)
    assert smp_decode(sf.encode_console(packet).splitlines(keepends=True)) == packet


def test_encode_raw_is_identity() -> None:
    packet = smp_requests()[0]
    assert sf.encode_raw(packet) is packet


# ---------------------------------------------------------------------------------------------
# Console framing: decoder


@pytest.mark.parametrize("index", range(len(smp_requests())))
@pytest.mark.parametrize("line_length", [127, 128, 64, 20, 8])
def test_smp_package_frames_decode(index: int, line_length: int) -> None:
    packet = smp_requests()[index]
    wire = b"".join(smp.packet.encode(packet, line_length=line_length))
    assert sf.ConsoleDecoder().feed(wire) == [packet]


@pytest.mark.parametrize("chunks", [(1,), (7,), (64,), (127,), (128,), (500,), (3, 200, 1, 64)])
def test_decoding_in_chunks_of_any_size(chunks: tuple[int, ...]) -> None:
    packets = smp_requests()
    wire = b"".join(sf.encode_console(p) for p in packets)
    wire += b"".join(b"".join(smp.packet.encode(p)) for p in packets)
    decoder = sf.ConsoleDecoder()
    assert feed_in_chunks(decoder, wire, cycle(*chunks)) == packets + packets


def test_feed_takes_a_length_and_a_memoryview() -> None:
    wire = sf.encode_console(ECHO_HI_PACKET)
    buf = bytearray(wire + b"garbage, not yet read")
    decoder = sf.ConsoleDecoder()
    assert decoder.feed(buf, len(wire)) == [ECHO_HI_PACKET]
    assert decoder.feed(memoryview(wire)) == [ECHO_HI_PACKET]
    assert decoder.feed(b"") == []


def test_console_text_between_and_around_packets_is_ignored() -> None:
    wire = (
        b"*** Booting ***\n"
        + sf.encode_console(ECHO_HI_PACKET)
        + b"\n\n\x06\n"
        + b"uart:~$ \x04\n"
        + sf.encode_console(ECHO_HI_PACKET)
        + b"no newline yet"
    )
    assert sf.ConsoleDecoder().feed(wire) == [ECHO_HI_PACKET, ECHO_HI_PACKET]


def test_text_between_the_lines_of_one_packet_is_ignored() -> None:
    lines = sf.encode_console(smp_requests()[5]).splitlines(keepends=True)
    wire = lines[0] + b"[00:00:01.000] <inf> log line\n" + b"".join(lines[1:])
    assert sf.ConsoleDecoder().feed(wire) == [smp_requests()[5]]


def test_continuation_without_a_start_is_ignored() -> None:
    lines = sf.encode_console(smp_requests()[5]).splitlines(keepends=True)
    decoder = sf.ConsoleDecoder()
    assert decoder.feed(b"".join(lines[1:])) == []
    assert decoder.feed(b"".join(lines)) == [smp_requests()[5]]


def test_a_start_line_drops_a_partial_packet() -> None:
    lines = sf.encode_console(smp_requests()[5]).splitlines(keepends=True)
    wire = b"".join(lines[:5]) + ECHO_HI_WIRE + b"".join(lines[5:]) + b"".join(lines)
    assert sf.ConsoleDecoder().feed(wire) == [ECHO_HI_PACKET, smp_requests()[5]]


@pytest.mark.parametrize(
    "bad_line",
    [
        b"\x04\x14ABC\n",  # a partial quad
        b"\x04\x14AB$D\n",  # outside the alphabet
        b"\x04\x14AA==AAAA\n",  # data after padding
        b"\x04\x14AAAA \n",  # a trailing space (Zephyr would skip it)
        b"\x04\x14\rAAAA\n",  # a CR elsewhere than at the end
    ],
)
def test_bad_base64_drops_the_packet(bad_line: bytes) -> None:
    lines = sf.encode_console(smp_requests()[5]).splitlines(keepends=True)
    decoder = sf.ConsoleDecoder()
    assert decoder.feed(b"".join(lines[:3]) + bad_line + b"".join(lines[3:])) == []
    assert decoder.feed(ECHO_HI_WIRE) == [ECHO_HI_PACKET]


def test_crlf_line_ends_are_accepted() -> None:
    wire = sf.encode_console(smp_requests()[4]).replace(b"\n", b"\r\n")
    assert sf.ConsoleDecoder(max_line=128).feed(wire) == [smp_requests()[4]]


def test_bytes_past_the_announced_length_drop_the_packet() -> None:
    packet = ECHO_HI_PACKET
    body = struct.pack(">H", len(packet) + 2) + packet + struct.pack(">H", xmodem(packet))
    wire = (
        b"\x06\x09"
        + binascii.b2a_base64(body[:6])
        + b"\x04\x14"
        + binascii.b2a_base64(body[6:] + b"\x00\x00\x00")
    )
    decoder = sf.ConsoleDecoder()
    assert decoder.feed(wire) == []
    # Same bytes, the extra three left out: accepted.
    wire = b"\x06\x09" + binascii.b2a_base64(body[:6]) + b"\x04\x14" + binascii.b2a_base64(body[6:])
    assert decoder.feed(wire) == [packet]


def test_a_bad_crc_drops_the_packet() -> None:
    body = struct.pack(">H", len(ECHO_HI_PACKET) + 2) + ECHO_HI_PACKET + b"\xe2\x7d"
    assert sf.ConsoleDecoder().feed(b"\x06\x09" + binascii.b2a_base64(body)) == []


@pytest.mark.parametrize("announced", [0, 1])
def test_a_length_too_short_for_the_crc_drops_the_line(announced: int) -> None:
    wire = b"\x06\x09" + binascii.b2a_base64(struct.pack(">H", announced) + b"\x00")
    assert sf.ConsoleDecoder().feed(wire) == []


def test_an_empty_packet_is_returned() -> None:
    wire = b"\x06\x09" + binascii.b2a_base64(b"\x00\x02\x00\x00")
    assert sf.ConsoleDecoder().feed(wire) == [b""]


def test_packets_over_max_packet_are_dropped() -> None:
    small, big = pattern(100, 1), pattern(101, 2)
    decoder = sf.ConsoleDecoder(max_packet=100)
    assert decoder.feed(sf.encode_console(big) + sf.encode_console(small)) == [small]


def test_lines_over_max_line_are_ignored_whole() -> None:
    packet = smp_requests()[4]
    long_lines = b"".join(smp.packet.encode(packet, line_length=132))  # 131-byte lines
    assert sf.ConsoleDecoder().feed(long_lines) == []
    assert sf.ConsoleDecoder(max_line=131).feed(long_lines) == [packet]
    # An over-long start line is ignored too: it does not reset the packet in progress.
    lines = sf.encode_console(smp_requests()[5]).splitlines(keepends=True)
    wire = lines[0] + b"\x06\x09" + b"A" * 200 + b"\n" + b"".join(lines[1:])
    assert feed_in_chunks(sf.ConsoleDecoder(), wire, cycle(50)) == [smp_requests()[5]]


def test_reset_forgets_partial_input() -> None:
    wire = sf.encode_console(smp_requests()[5])
    decoder = sf.ConsoleDecoder()
    assert decoder.feed(wire[:300]) == []
    decoder.reset()
    assert decoder.feed(wire[300:]) == []
    assert decoder.feed(wire) == [smp_requests()[5]]


def test_returned_packets_are_independent() -> None:
    decoder = sf.ConsoleDecoder()
    first = decoder.feed(ECHO_HI_WIRE)[0]
    second = decoder.feed(ECHO_HI_WIRE)[0]
    assert first is not second
    first[0] ^= 0xFF
    assert second == ECHO_HI_PACKET


# Streams of valid lines, console text, and damaged lines, for the model comparison.

_valid_packets = st.one_of(
    st.sampled_from(smp_requests()),
    st.binary(min_size=1, max_size=700),
)


@st.composite
def line_streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        packet = draw(_valid_packets)
        style = draw(st.sampled_from(["zephyr", "smp", "smp64"]))
        if style == "zephyr":
            lines = sf.encode_console(packet).splitlines(keepends=True)
        else:
            lines = list(smp.packet.encode(packet, 127 if style == "smp" else 64))
        for line in lines:
            damage = draw(
                st.sampled_from(["none"] * 6 + ["flip", "cut", "drop", "twice", "text", "long"])
            )
            if damage == "none":
                parts.append(line)
            elif damage == "flip":
                i = draw(st.integers(0, len(line) - 1))
                parts.append(
                    line[:i] + bytes([line[i] ^ draw(st.integers(1, 255))]) + line[i + 1 :]
                )
            elif damage == "cut":
                i = draw(st.integers(0, len(line) - 1))
                parts.append(line[:i] + line[i + 1 :])
            elif damage == "twice":
                parts += [line, line]
            elif damage == "text":
                parts += [draw(st.binary(max_size=40)) + b"\n", line]
            elif damage == "long":
                parts.append(line[:-1] + b"A" * draw(st.integers(1, 8)) + b"\n")
    chunks = draw(st.lists(st.integers(1, 300), min_size=1, max_size=8))
    return b"".join(parts), chunks


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(line_streams())
def test_decoder_agrees_with_the_zephyr_model(case: tuple[bytes, list[int]]) -> None:
    wire, chunks = case
    ours = feed_in_chunks(sf.ConsoleDecoder(), wire, cycle(*chunks))
    assert ours == ZephyrRx().stream(wire)


@settings(max_examples=EXAMPLES)
@given(st.binary(max_size=2000), st.lists(st.integers(1, 200), min_size=1, max_size=5))
def test_console_decoder_never_raises_on_random_bytes(data: bytes, chunks: list[int]) -> None:
    feed_in_chunks(sf.ConsoleDecoder(max_packet=300), data, cycle(*chunks))


@settings(max_examples=EXAMPLES)
@given(st.data())
def test_console_decoder_never_raises_on_mutated_frames(data: st.DataObject) -> None:
    wire = bytearray(sf.encode_console(data.draw(st.sampled_from(smp_requests()))))
    for _ in range(data.draw(st.integers(1, 10))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(
            st.sampled_from([0x06, 0x09, 0x04, 0x14, 0x0A, 0x0D, 0x3D, 0x41, 0x00, 0xFF])
        )
    chunks = data.draw(st.lists(st.integers(1, 200), min_size=1, max_size=5))
    feed_in_chunks(sf.ConsoleDecoder(max_packet=200), bytes(wire), cycle(*chunks))


# Zephyr-style and smp-style line splits of the same packets.


@pytest.mark.parametrize("n", [1, 89, 90, 91, 92, 93, 182, 183, 1000, 2038, 2500])
def test_both_line_splits_decode(n: int) -> None:
    packet = pattern(n, n)
    zephyr_style = sf.encode_console(packet)  # 124, then 120-character lines
    smp_style = b"".join(smp.packet.encode(packet))  # 120-character lines throughout
    decoder = sf.ConsoleDecoder()
    assert decoder.feed(zephyr_style) == [packet]
    assert decoder.feed(smp_style) == [packet]
    assert smp_decode(zephyr_style.splitlines(keepends=True)) == packet


# ---------------------------------------------------------------------------------------------
# Raw framing


class FakeClock:
    def __init__(self, start_ms: int = 0) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms


def raw_packet(length: int, op: int = sf.OP_WRITE, seq: int = 0) -> bytes:
    return sf.pack_header(
        op, sf.VERSION_2, 0, length, sf.GROUP_IMAGE, seq, sf.IMG_UPLOAD
    ) + pattern(length, seq)


def test_raw_packets_back_to_back_in_any_chunks() -> None:
    packets = [raw_packet(n, seq=i) for i, n in enumerate([0, 1, 50, 500, 2000, 7])]
    wire = b"".join(packets)
    for chunks in [(1,), (3,), (8,), (9,), (64,), (10000,), (5, 300, 1)]:
        decoder = sf.RawDecoder(4096, 3000, FakeClock())
        assert feed_in_chunks(decoder, wire, cycle(*chunks)) == packets


def test_raw_oversized_packets_are_skipped() -> None:
    small, big = raw_packet(92, seq=1), raw_packet(93, seq=2)
    decoder = sf.RawDecoder(100, 3000, FakeClock())
    assert feed_in_chunks(decoder, big + small + big + small, cycle(7)) == [small, small]


def test_raw_partial_packet_dropped_after_idle_gap() -> None:
    clock = FakeClock()
    decoder = sf.RawDecoder(4096, 3000, clock)
    packet = raw_packet(40)
    assert decoder.feed(packet[:20]) == []
    clock.ms += 2999
    assert decoder.feed(b"") == []
    assert decoder.feed(packet[20:]) == [packet]  # the gap never reached 3000 ms
    assert decoder.feed(packet[:20]) == []
    clock.ms += 3000
    assert decoder.feed(packet) == [packet]


def test_raw_idle_gap_measured_across_a_clock_wrap() -> None:
    clock = FakeClock((1 << 29) - 1000)
    decoder = sf.RawDecoder(4096, 3000, clock)
    packet = raw_packet(40)
    assert decoder.feed(packet[:20]) == []
    clock.ms = 1500  # wrapped: 2500 ms later
    assert decoder.feed(packet[20:]) == [packet]
    assert decoder.feed(packet[:20]) == []
    clock.ms = 4500  # 3000 ms later
    assert decoder.feed(packet) == [packet]


def test_raw_unknown_op_discards_until_idle() -> None:
    clock = FakeClock()
    decoder = sf.RawDecoder(4096, 3000, clock)
    good = raw_packet(10)
    bad = raw_packet(10, op=5)
    assert decoder.feed(bad + good) == []
    clock.ms += 100
    assert decoder.feed(good) == []  # still out of step: the line never went idle
    clock.ms += 3000
    assert decoder.feed(good) == [good]


def test_raw_needs_a_clock() -> None:
    with pytest.raises(ValueError):
        sf.RawDecoder(100, 3000)


def test_raw_reset_and_length() -> None:
    decoder = sf.RawDecoder(4096, 3000, FakeClock())
    packet = raw_packet(30)
    assert decoder.feed(packet[:10]) == []
    decoder.reset()
    buf = bytearray(packet + b"\xff" * 10)
    assert decoder.feed(buf, len(packet)) == [packet]


@settings(max_examples=EXAMPLES)
@given(
    st.binary(max_size=3000),
    st.lists(st.integers(0, 200), min_size=1, max_size=5),
    st.lists(st.integers(0, 5000), min_size=1, max_size=5),
)
def test_raw_decoder_never_raises(data: bytes, chunks: list[int], gaps: list[int]) -> None:
    clock = FakeClock()
    decoder = sf.RawDecoder(300, 3000, clock)
    pos = 0
    i = 0
    while pos < len(data):
        n = chunks[i % len(chunks)]
        for packet in decoder.feed(data[pos : pos + n]):
            assert 8 <= len(packet) <= 300
        clock.ms += gaps[i % len(gaps)]
        pos += max(n, 1)
        i += 1


# ---------------------------------------------------------------------------------------------
# CBOR

_keys = st.one_of(st.text(max_size=8), st.integers(-(2**64), 2**64 - 1))
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=20),
)
cbor_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=EXAMPLES)
@given(cbor_values)
def test_cbor_agrees_with_cbor2_both_ways(value: Any) -> None:
    ours = cbor.encode(value)
    assert cbor2.loads(ours) == value
    assert ours == cbor2.dumps(value)  # both write the shortest heads, keys in order
    limits = {"max_depth": 64, "max_items": 10_000}
    assert cbor.decode(ours, **limits) == value
    assert cbor.decode(cbor2.dumps(value, indefinite_containers=True), **limits) == value


def test_cbor_golden() -> None:
    cases: list[tuple[Any, str]] = [
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65535, "19ffff"),
        (65536, "1a00010000"),
        (2**32, "1b0000000100000000"),
        (2**64 - 1, "1bffffffffffffffff"),
        (-1, "20"),
        (-24, "37"),
        (-25, "3818"),
        (-(2**64), "3bffffffffffffffff"),
        (b"", "40"),
        (b"\x01\x02", "420102"),
        ("", "60"),
        ("é", "62c3a9"),
        ([], "80"),
        ([1, [2, 3]], "8201820203"),
        ({}, "a0"),
        ({"d": "hi"}, "a16164626869"),
        (False, "f4"),
        (True, "f5"),
        (None, "f6"),
        ({"off": 0, "data": b"\xaa"}, "a2636f666600646461746141aa"),
    ]
    for value, expected in cases:
        assert cbor.encode(value).hex() == expected, value
        assert cbor.decode(bytes.fromhex(expected)) == value


def test_cbor_encodes_buffers_tuples_and_keeps_key_order() -> None:
    assert cbor.encode(bytearray(b"ab")) == cbor.encode(memoryview(b"ab")) == b"\x42ab"
    assert cbor.encode((1, 2)) == cbor.encode([1, 2])
    assert cbor.encode({"z": 1, "a": 2}) == b"\xa2\x61z\x01\x61a\x02"
    out = bytearray(b"HDR")
    cbor.encode_into(out, {"r": "x"})
    assert out == b"HDR\xa1\x61r\x61x"


@pytest.mark.parametrize("value", [2**64, -(2**64) - 1, 1.5, {1, 2}, object(), [b"x", 1j]])
def test_cbor_encode_refuses(value: Any) -> None:
    with pytest.raises(cbor.CborError):
        cbor.encode(value)


def test_cbor_encode_refuses_a_cycle() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(cbor.CborError):
        cbor.encode(loop)


@pytest.mark.parametrize(
    "encoded",
    [
        "f93c00",
        "f9bc00",
        "f97bff",
        "f90001",
        "f97c00",
        "f9fc00",
        "f97e00",
        "fa3fc00000",
        "fb3ff8000000000000",
        "fb7ff0000000000000",
        "f98000",
    ],
)
def test_cbor_floats_decode_as_cbor2_does(encoded: str) -> None:
    ours = cbor.decode(bytes.fromhex(encoded))
    theirs = cbor2.loads(bytes.fromhex(encoded))
    assert isinstance(ours, float)
    if math.isnan(theirs):
        assert math.isnan(ours)
    else:
        assert ours == theirs and math.copysign(1, ours) == math.copysign(1, theirs)


@settings(max_examples=EXAMPLES)
@given(st.integers(0, 0xFFFF))
def test_cbor_every_half_float(bits: int) -> None:
    raw = b"\xf9" + struct.pack(">H", bits)
    ours, theirs = cbor.decode(raw), cbor2.loads(raw)
    assert (math.isnan(ours) and math.isnan(theirs)) or ours == theirs


def test_cbor_indefinite_forms() -> None:
    assert cbor.decode(bytes.fromhex("bf6161 01 6162 9f 02 03 ff ff".replace(" ", ""))) == {
        "a": 1,
        "b": [2, 3],
    }
    assert cbor.decode(bytes.fromhex("5f 42 0102 41 03 ff".replace(" ", ""))) == b"\x01\x02\x03"
    assert cbor.decode(bytes.fromhex("7f 62 6869 60 ff".replace(" ", ""))) == "hi"
    assert cbor.decode(bytes.fromhex("5fff")) == b""


def test_cbor_decode_exactly_a_range_of_a_packet() -> None:
    packet = smp_requests()[4]
    length = sf.unpack_header(packet)[3]
    request = cbor.decode(packet, 8, 8 + length)
    assert request == cbor2.loads(packet[8:])
    assert cbor.decode_prefix(packet + b"\x00junk", 8) == (request, len(packet))
    with pytest.raises(cbor.CborError, match="trailing"):
        cbor.decode(packet + b"\x00", 8)
    with pytest.raises(cbor.CborError, match="truncated"):
        cbor.decode(packet, 8, len(packet) - 1)


def test_cbor_bytes_view_shares_the_packet() -> None:
    packet = bytearray(smp_requests()[4])
    request = cbor.decode(packet, 8, bytes_view=True)
    data = request["data"]
    assert isinstance(data, memoryview) and data == pattern(2048)
    assert isinstance(request["sha"], memoryview)
    offset = bytes(packet).index(pattern(2048))
    packet[offset] ^= 0xFF
    assert data[0] == pattern(2048)[0] ^ 0xFF
    # Keys are always hashable values, even byte-string keys.
    assert cbor.decode(b"\xa1\x41k\x01", bytes_view=True) == {b"k": 1}
    chunked = cbor.decode(bytes.fromhex("5f4201024103ff"), bytes_view=True)
    assert bytes(chunked) == b"\x01\x02\x03"


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ("", "truncated"),
        ("18", "truncated"),
        ("19ff", "truncated"),
        ("1aff", "truncated"),
        ("1bff", "truncated"),
        ("1c", "additional info"),
        ("1f", "additional info"),
        ("3f", "additional info"),
        ("5b7fffffffffffffff00", "truncated"),
        ("7b7fffffffffffffff", "truncated"),
        ("9b7fffffffffffffff", "truncated"),
        ("bb7fffffffffffffff", "truncated"),
        ("9a7fffffff", "truncated"),
        ("62c3", "truncated"),
        ("62ffff", "UTF-8"),
        ("c0", "tag"),
        ("d818 00", "tag"),
        ("f7", "simple"),
        ("f820", "simple"),
        ("ff", "break"),
        ("81ff", "break"),
        ("5f01ff", "chunk"),
        ("5f5f40ffff", "chunk"),
        ("7f40ff", "chunk"),
        ("9f", "truncated"),
        ("bf61", "truncated"),
        ("bf616101", "truncated"),
        ("a2616101616102", "duplicate"),
        ("a18000", "unhashable"),
        ("a1a000", "unhashable"),
        ("0000", "trailing"),
        ("f9", "truncated"),
        ("fa0000", "truncated"),
        ("fb00", "truncated"),
    ],
)
def test_cbor_rejects(encoded: str, message: str) -> None:
    with pytest.raises(cbor.CborError, match=message):
        cbor.decode(bytes.fromhex(encoded.replace(" ", "")))


def test_cbor_limits() -> None:
    nested = b"\x81" * 8 + b"\x00"
    assert cbor.decode(nested) == [[[[[[[[0]]]]]]]]
    with pytest.raises(cbor.CborError, match="nesting"):
        cbor.decode(b"\x81" + nested)
    with pytest.raises(cbor.CborError, match="nesting"):
        cbor.decode(b"\x9f" * 9 + b"\x00" + b"\xff" * 9)
    assert cbor.decode(b"\x81\x81\x00", max_depth=2) == [[0]]
    with pytest.raises(cbor.CborError, match="nesting"):
        cbor.decode(b"\xa1\x61a\xa1\x61b\x00", max_depth=1)
    many = cbor.encode(list(range(127)))
    assert len(cbor.decode(many)) == 127
    with pytest.raises(cbor.CborError, match="too many"):
        cbor.decode(cbor.encode(list(range(128))))
    assert len(cbor.decode(cbor.encode(list(range(128))), max_items=129)) == 128
    with pytest.raises(cbor.CborError, match="nesting too deep"):
        cbor.decode(b"\x81" * 100_000 + b"\x00", max_depth=100_000, max_items=200_000)


def test_cbor_bad_ranges_and_types() -> None:
    with pytest.raises(cbor.CborError):
        cbor.decode(b"\x00", 2)
    with pytest.raises(cbor.CborError):
        cbor.decode(b"\x00", 0, 2)
    with pytest.raises(cbor.CborError):
        cbor.decode("00")


@settings(max_examples=EXAMPLES)
@given(st.binary(max_size=200))
def test_cbor_random_bytes_raise_only_cbor_error(data: bytes) -> None:
    with contextlib.suppress(cbor.CborError):
        cbor.decode(data)


@settings(max_examples=EXAMPLES)
@given(cbor_values, st.data())
def test_cbor_mutated_values_raise_only_cbor_error(value: Any, data: st.DataObject) -> None:
    raw = bytearray(cbor.encode(value))
    for _ in range(data.draw(st.integers(1, 4))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        with contextlib.suppress(cbor.CborError):
            cbor.decode(candidate, bytes_view=data.draw(st.booleans()))


def test_cbor_upload_request_at_the_default_limits() -> None:
    request = {
        "image": 0,
        "len": 123456,
        "off": 0,
        "sha": pattern(32),
        "data": pattern(2048),
        "upgrade": False,
    }
    encoded = cbor.encode(request)
    packet = sf.pack_header(sf.OP_WRITE, 1, 0, len(encoded), 1, 0, 1) + encoded + b"\xff"
    length = sf.unpack_header(packet)[3]
    assert cbor.decode(packet, 8, 8 + length) == request
