"""Fuzzing every parser that reads outside input: never a crash, never a hang, never a half-act.

Each parser is fed random bytes and mutations of its valid inputs (strategies in fuzz_kit.py,
the device and links in fuzz_rigs.py). The properties: it returns a value or raises the error
its module declares, nothing else; an example never takes longer than the profile's deadline;
and what it accepts is safe to act on: an upload never touches the running image or schedules
a swap by itself, MCUboot never swaps in an image that does not validate, always swaps in one
that does, and the primary slot validates after every boot.

``just test`` runs the "fuzz" profile (200 cases per parser); the long run, with the number
of cases each parser got:

    FOTA_FUZZ_PROFILE=reliability python -m pytest tests/test_fuzz.py --hypothesis-show-statistics
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
from fuzz_kit import (
    BASE_CONFIG,
    BOARD_TREES,
    CONFIG_PATHS,
    FIRMWARE_DOC,
    FUZZ,
    REQUESTS,
    SECRET,
    THINGS,
    TIMEOUT_S,
    cbor2_or_none,
    cbor_inputs,
    chunked,
    config_values,
    device_replies,
    document_texts,
    encodable,
    image_inputs,
    int_values,
    job_documents,
    json_values,
    layout_values,
    leaf_paths,
    mutate_tree,
    mutated,
    noise,
    payloads,
    reply_maps,
    request_fields,
    smp_packets,
    toml_values,
    topics,
    upload_plans,
)
from fuzz_rigs import (
    BUF_SIZE,
    CLIENT_COMMANDS,
    AnsweringLink,
    Device,
    FakeLink,
    FakePort,
    Images,
    Runaway,
    assert_primary_valid,
    is_error,
    reply_body,
    request,
    run_command,
    valid_image,
)
from hypothesis import event, given
from hypothesis import strategies as st

from bootloader.formats import image as bimg
from bootloader.formats import keys as bkeys
from bootloader.formats import verify as bverify
from bootloader.formats.layout import (
    BOARDS_DIR,
    Layout,
    LayoutError,
    load_board,
    load_layout,
    parse_layout,
)
from bootloader.sim.flash import Flash
from bootloader.sim.model.boot import boot
from bootloader.sim.testimages import keygen, payload, sign
from fota_common.errors import BridgeError, DeviceError
from host_bridge.config import THING_NAME, ConfigError, parse_config
from host_bridge.jobs.documents import (
    DocumentError,
    FirmwareJob,
    OtherJob,
    parse_document,
    parse_document_text,
)
from host_bridge.smp.client import SlotState, SmpClient, check_reply
from host_bridge.smp.upload import _next_reply, upload
from host_bridge.smp.window import UploadState as _State
from host_bridge.urls import url_problem
from localjobs import model as jobs_model
from localjobs.api import JobsApi, parse_topic
from localjobs.store import JobStore
from mcu import cbor, fota_doc
from mcu import mcuboot as mb
from mcu import smp_frame as sf
from mcu.flash_area import RamArea
from mcu.receiver import Receiver

pytestmark = pytest.mark.timeout(TIMEOUT_S)


# -- images, made once by imgtool -----------------------------------------------------------------


@pytest.fixture(scope="module")
def images(
    tiny: Layout, tiny_pair: tuple[bytes, bytes], tmp_path_factory: pytest.TempPathFactory
) -> Images:
    d = tmp_path_factory.mktemp("keys")
    trusted, other = keygen(d / "trusted.pem"), keygen(d / "other.pem")
    ed, rsa = keygen(d / "ed.pem", "ed25519"), keygen(d / "rsa.pem", "rsa-2048")
    v1_payload, v2_payload = payload(1500, "v1"), payload(1700, "v2")
    keys = [bkeys.load_public_key(p.read_bytes()) for p in (trusted, ed, rsa)]
    return Images(
        *tiny_pair,
        sign(v1_payload, "1.0.0", tiny, trusted),
        sign(v2_payload, "2.0.0", tiny, trusted),
        sign(v2_payload, "2.0.0", tiny, other),
        sign(v2_payload, "2.0.0", tiny, ed),
        sign(v2_payload, "2.0.0", tiny, rsa),
        keys,
    )


# -- job documents --------------------------------------------------------------------------------

HOSTS: Final = st.sampled_from((None, ["*.amazonaws.com"], ["h.example", "*.example"], []))
# SECRET as a query value: after a "?", in a run of characters that can be a URL's query.
_IN_QUERY: Final = re.compile(r"\?[^\s'\"<>]*" + SECRET)


def _query_secret(value: object) -> bool:
    """Does the (parsed) document carry SECRET in a query string, which must stay hidden?"""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return False
    if isinstance(value, str):
        return bool(_IN_QUERY.search(value))
    if isinstance(value, dict):
        return any(map(_query_secret, value.values()))
    if isinstance(value, list):
        return any(map(_query_secret, value))
    return False


def _hidden(doc: object, *texts: str) -> None:
    if _query_secret(doc):
        assert all(SECRET not in text for text in texts), texts


def _check_job(
    doc: object, job: FirmwareJob | OtherJob, allow_http: bool, hosts: list[str] | None
) -> None:
    _hidden(doc, repr(job))
    if isinstance(job, OtherJob):
        return
    assert url_problem(job.url, allow_http=allow_http, allowed_hosts=hosts) is None
    assert job.url.lower().startswith("https://") or allow_http
    assert job.size is None or 1 <= job.size <= 2**32
    assert job.sha256 is None or len(job.sha256) == 32
    assert job.md5 is None or len(job.md5) == 16
    assert job.source != "native" or job.sha256 or job.md5
    assert 0 <= job.image <= 255


@FUZZ
@given(doc=job_documents(), allow_http=st.booleans(), hosts=HOSTS)
def test_fuzz_job_document(doc: object, allow_http: bool, hosts: list[str] | None) -> None:
    try:
        job = parse_document(doc, allow_http=allow_http, allowed_hosts=hosts)
    except DocumentError as exc:
        _hidden(doc, exc.reason)
        assert "\n" not in exc.reason
        return
    _check_job(doc, job, allow_http, hosts)


@FUZZ
@given(text=document_texts(), allow_http=st.booleans())
def test_fuzz_job_document_text(text: str | bytes, allow_http: bool) -> None:
    try:
        job = parse_document_text(text, allow_http=allow_http)
    except DocumentError as exc:
        _hidden(text, exc.reason)
        assert "\n" not in exc.reason
        return
    _check_job(text, job, allow_http, None)


def _mcu_parse(doc: object, allow_http: bool) -> dict[str, Any] | Exception | None:
    try:
        return fota_doc.parse(doc, allow_http)  # type: ignore[no-any-return]
    except fota_doc.DocumentError as exc:
        _hidden(doc, str(exc))
        return exc


@FUZZ
@given(doc=job_documents() | document_texts(), allow_http=st.booleans())
def test_fuzz_mcu_job_document_agrees_with_the_gateway(doc: object, allow_http: bool) -> None:
    """The MCU's codec: DocumentError or a spec; where both accept, the same image."""
    spec = _mcu_parse(doc, allow_http)
    try:
        if isinstance(doc, (str, bytes)):
            host: object = parse_document_text(doc, allow_http=allow_http)
        else:
            host = parse_document(doc, allow_http=allow_http)
    except DocumentError as exc:
        host = exc
    # Both refuse, both hand the job on, or both accept the same image.
    assert isinstance(spec, Exception) == isinstance(host, Exception), (spec, host)
    assert (spec is None) == isinstance(host, OtherJob), (spec, host)
    if isinstance(spec, dict):
        assert isinstance(host, FirmwareJob)
        assert spec["url"].lower().startswith("https://") or allow_http
        assert spec["source"] == host.source
        assert spec["url"] == host.url
        assert spec["size"] == host.size
        assert spec["md5"] == (host.md5.hex() if host.md5 else None)
        assert spec["sha256"] == (host.sha256.hex() if host.sha256 else None)
        if host.version is not None:
            assert fota_doc.format_version(spec["version"]) == host.version.replace("+0", "")


# -- CBOR -----------------------------------------------------------------------------------------


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, float) and isinstance(theirs, float):
        return ours == theirs or (math.isnan(ours) and math.isnan(theirs))
    if isinstance(ours, memoryview):
        ours = bytes(ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(map(_same, ours, theirs))
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(_same(v, theirs[k]) for k, v in ours.items())
    return type(ours) is type(theirs) and bool(ours == theirs)


@FUZZ
@given(data=cbor_inputs(), pad=st.binary(max_size=4))
def test_fuzz_cbor_decode(data: bytes, pad: bytes) -> None:
    """A value cbor2 agrees with, or CborError; in place or at an offset, copied or viewed."""
    try:
        value = cbor.decode(data)
    except cbor.CborError:
        value = None
        ok = False
    else:
        ok = True
        assert _same(value, cbor2.loads(data))
    framed = pad + data + pad
    try:
        viewed = cbor.decode(framed, len(pad), len(pad) + len(data), bytes_view=True)
    except cbor.CborError:
        assert not ok
    else:
        assert ok and _same(viewed, value)


@FUZZ
@given(value=encodable)
def test_fuzz_cbor_round_trip(value: Any) -> None:
    encoded = cbor.encode(value)
    assert _same(cbor2.loads(encoded), value)
    assert _same(cbor.decode(encoded, max_depth=64, max_items=1 << 16), value)


# -- SMP framing ----------------------------------------------------------------------------------


def _console_run(stream: bytes, cuts: list[int], max_packet: int = BUF_SIZE) -> list[bytes]:
    decoder = sf.ConsoleDecoder(max_packet)
    out: list[bytes] = []
    for chunk in chunked(stream, cuts):
        got = decoder.feed(bytearray(chunk) if len(chunk) % 2 else chunk)
        assert all(type(p) is bytearray and len(p) <= max_packet for p in got)
        out += [bytes(p) for p in got]
    return out


@FUZZ
@given(
    packets=st.lists(smp_packets, min_size=1, max_size=4),
    noise_lines=st.lists(noise, max_size=3),
    mutate=st.booleans(),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
    data=st.data(),
)
def test_fuzz_console_decoder(
    packets: list[bytes],
    noise_lines: list[bytes],
    mutate: bool,
    cuts: list[int],
    data: st.DataObject,
) -> None:
    """Never raises; the packets found do not depend on how the input was cut into reads."""
    stream = b"".join(noise_lines) + b"".join(sf.encode_console(p) for p in packets)
    if mutate:
        stream = data.draw(mutated(stream, max_ops=6))
    whole = _console_run(stream, [])
    assert _console_run(stream, cuts) == whole
    if not mutate:
        assert whole == packets
    # feed(data, n) looks at the first n bytes only.
    decoder = sf.ConsoleDecoder(BUF_SIZE)
    assert [bytes(p) for p in decoder.feed(stream + b"\x06\x09AAAA\n", len(stream))] == whole


@FUZZ
@given(packet=smp_packets, line_limit=st.integers(15, 300))
def test_fuzz_console_line_limits(packet: bytes, line_limit: int) -> None:
    frame = sf.encode_console(packet, line_limit)
    assert all(len(line) <= line_limit for line in frame.splitlines(keepends=True))
    decoder = sf.ConsoleDecoder(len(packet), max_line=line_limit)
    assert [bytes(p) for p in decoder.feed(frame)] == [packet]


def _raw_run(stream: bytes, cuts: list[int], max_packet: int) -> list[bytes]:
    decoder = sf.RawDecoder(max_packet, 3000, clock=lambda: 0)
    out: list[bytes] = []
    for chunk in chunked(stream, cuts):
        for p in decoder.feed(chunk):
            assert len(p) == sf.HEADER_SIZE + struct.unpack_from(">H", p, 2)[0] <= max_packet
            out.append(bytes(p))
    return out


@FUZZ
@given(
    bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    mutate=st.booleans(),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
    max_packet=st.sampled_from((64, 256, BUF_SIZE)),
    data=st.data(),
)
def test_fuzz_raw_decoder(
    bodies: list[bytes], mutate: bool, cuts: list[int], max_packet: int, data: st.DataObject
) -> None:
    packets = [
        sf.pack_header(data.draw(st.sampled_from((0, 2))), 1, 0, len(b), 1, i, 1) + b
        for i, b in enumerate(bodies)
    ]
    stream = b"".join(packets)
    if mutate:
        stream = data.draw(mutated(stream, max_ops=6))
    whole = _raw_run(stream, [], max_packet)
    assert _raw_run(stream, cuts, max_packet) == whole
    if not mutate:
        assert whole == [p for p in packets if len(p) <= max_packet]
    # An idle gap on a clock that wraps drops a partial packet and nothing else.
    ticks = iter(range(0, 1 << 40, 1 << 27))
    decoder = sf.RawDecoder(max_packet, 3000, clock=lambda: next(ticks))
    for chunk in chunked(stream, cuts):
        decoder.feed(chunk)


# -- the SMP server and receiver on RAM flash -----------------------------------------------------


@FUZZ
@given(data=st.data())
def test_fuzz_smp_server(tiny: Layout, images: Images, data: st.DataObject) -> None:
    """Every packet of 8 bytes or more gets one well-formed reply; the running image stays."""
    device = Device(tiny, images.v1)
    before = device.primary.read(0, device.primary.size)
    for seq in range(data.draw(st.integers(1, 4))):
        op, group, command = data.draw(st.sampled_from(REQUESTS))
        packet = request(op, group, command, data.draw(request_fields), seq)
        kind = data.draw(st.sampled_from(("as is", "mutated", "random")))
        if kind == "mutated":
            packet = data.draw(mutated(packet, (range(0, 8),)))
        elif kind == "random":
            packet = data.draw(st.binary(max_size=64))
        reply = device.server.handle(packet)
        if len(packet) < sf.HEADER_SIZE:
            assert reply is None
            continue
        assert reply is not None
        rop, _v, _f, length, rgroup, rseq, rcmd = sf.unpack_header(reply)
        assert (rgroup, rseq, rcmd) == sf.unpack_header(packet)[4:]
        assert rop in (sf.OP_READ_RSP, sf.OP_WRITE_RSP) and length == len(reply) - 8
        reply_body(reply)
    assert device.primary.read(0, device.primary.size) == before


@FUZZ
@given(
    data=st.data(),
    framing=st.sampled_from(("direct", "console", "raw")),
    before=st.sampled_from(("erased", "pending", "unmarked", "bad trailer")),
    allow_erase_pending=st.booleans(),
)
def test_fuzz_upload_then_boot(
    tiny: Layout,
    images: Images,
    data: st.DataObject,
    framing: str,
    before: str,
    allow_erase_pending: bool,
) -> None:
    """Whatever an upload brings, MCUboot boots a valid image: the new one exactly when it is
    valid, complete and marked pending, else the old one.

    An upload never writes the running image or the secondary's trailer: the trailer is left
    as it was, or erased for a new upload.  An image already pending is not touched at all
    unless CONFIG_MCUMGR_GRP_IMG_ALLOW_ERASE_PENDING lets the upload replace it, and then the
    replacement starts from an erased trailer (nothing stays pending by accident).
    """
    candidate = data.draw(st.just(images.v2) | image_inputs((images.v2,)), label="candidate")
    device = Device(tiny, images.v1, allow_erase_pending)
    if before != "erased":
        device.secondary.write(0, images.v2 + b"\xff" * (-len(images.v2) % tiny.write_size))
    if before == "pending":
        mb.set_pending(device.secondary, False, 0, tiny.max_align)
    elif before == "bad trailer":
        device.secondary.write(
            device.secondary.size - 16, data.draw(st.binary(min_size=16, max_size=16))
        )
    running, trailer = device.primary.read(0, device.primary.size), device.trailer()
    secondary = device.secondary.read(0, device.secondary.size)
    pending = mb.read_swap_state(device.secondary, tiny.max_align).magic == mb.MAGIC_GOOD
    plan = data.draw(upload_plans(candidate), label="plan")
    packets = [request(sf.OP_WRITE, 1, 1, body, seq & 0xFF) for seq, body in enumerate(plan)]
    if framing == "direct":
        for packet in packets:
            assert reply_body(device.server.handle(packet)) is not None
    else:
        wire = (
            b"".join(sf.encode_console(p) for p in packets)
            if framing == "console"
            else b"".join(packets)
        )
        port = FakePort(chunked(wire, data.draw(st.lists(st.integers(0, 1 << 16), max_size=6))))
        receiver = Receiver(port, device.server, framing, clock=lambda: 0)
        while receiver.poll():
            pass
        assert receiver.requests == len(packets)
    assert device.primary.read(0, device.primary.size) == running
    assert device.trailer() in (trailer, b"\xff" * len(trailer))
    replaced = device.secondary.read(0, device.secondary.size) != secondary
    if pending and not (allow_erase_pending and replaced):  # "bad trailer" may draw the magic
        assert not replaced
    else:
        assert mb.read_swap_state(device.secondary, tiny.max_align).magic != mb.MAGIC_GOOD

    # Ask for a test (or permanent) swap of whatever the secondary now holds, then boot.
    info = mb.image_info(device.secondary)
    if info is not None:
        # An empty hash TLV gives an empty hash: with confirm, that confirms the running image.
        digest = bytes(info["hash"])
        body = {"hash": digest, "confirm": data.draw(st.booleans())}
        marked = not is_error(reply_body(device.server.handle(request(2, 1, 0, body))))
        if marked and digest:
            assert mb.read_swap_state(device.secondary, tiny.max_align).magic == mb.MAGIC_GOOD
    state = mb.read_swap_state(device.secondary, tiny.max_align)
    held = device.secondary.read(0, info["size"]) if info is not None else b""
    swap = state.magic == mb.MAGIC_GOOD and valid_image(held, [], tiny)
    old = bimg.parse_image(images.v1).sha256_tlv
    assert old is not None
    flash = device.flash()
    result = boot(flash, tiny)
    assert result.booted is not None, result.panic
    assert_primary_valid(flash, tiny, [])
    event("swapped in the upload" if swap else "kept the running image")
    assert bytes.fromhex(result.booted.hash) == (info["hash"] if swap else old)
    if swap and state.image_ok != mb.FLAG_SET:  # a test swap, unconfirmed: reverted
        again = boot(flash, tiny)
        assert again.booted is not None and bytes.fromhex(again.booted.hash) == old
        assert_primary_valid(flash, tiny, [])


# -- MCUboot images -------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_fuzz_parse_and_verify_image(images: Images, data: st.DataObject) -> None:
    """ImageError or an image; verification is a value, and passes only for signed content."""
    raw = data.draw(image_inputs(images.bases))
    try:
        img = bimg.parse_image(raw)
    except bimg.ImageError as exc:
        assert exc.code in ("truncated", "bad-magic", "bad-header", "bad-tlv-magic", "bad-tlv")
        event(f"ImageError {exc.code}")
        return
    assert img.data == raw[: img.total_size] and img.trailing == len(raw) - img.total_size
    json.dumps(bimg.describe(img))
    # The MCU's reader (SMP image state, the boot model) finds the same size and hash.
    hash_tlv = img.hash_tlv()
    if hash_tlv is not None:
        area = RamArea(len(raw) + 4, len(raw) + 4, 1)
        area.mem[: len(raw)] = raw
        info = mb.image_info(area)
        if len(hash_tlv.value) != HASH_LENS[hash_tlv.type]:
            assert info is None  # Zephyr and MCUboot refuse a hash TLV of the wrong length
        else:
            assert info is not None
            assert (info["size"], bytes(info["hash"])) == (img.total_size, hash_tlv.value)
    unchecked = bverify.verify_image(img)
    event(f"parsed; hash {'ok' if unchecked.hash_ok else 'bad'}")
    if unchecked.ok:
        assert hash_tlv is not None
        assert hashlib.new(HASH_ALGS[hash_tlv.type], img.hash_region).digest() == hash_tlv.value
    if bverify.verify_image(img, images.keys).ok:
        assert img.hash_region in images.trusted_regions, "a signature was forged"


HASH_ALGS: Final = {0x10: "sha256", 0x11: "sha384", 0x12: "sha512"}
HASH_LENS: Final = {0x10: 32, 0x11: 48, 0x12: 64}


@FUZZ
@given(
    data=st.data(),
    board=st.sampled_from(("tiny", "tiny-overwrite")),
    signed=st.booleans(),
    trailer=st.sampled_from(("test", "permanent", "random", "none")),
)
def test_fuzz_boot_pending_image(
    images: Images, data: st.DataObject, board: str, signed: bool, trailer: str
) -> None:
    """A random or mutated image in the secondary, marked pending: never a crash, never an
    invalid image swapped in, a valid one always; the primary validates after every boot."""
    layout = load_board(board)
    keys = images.keys if signed else []
    running = images.v1_signed if signed else images.v1
    bases = (images.v2_signed, images.v2_untrusted, images.v2_ed25519) if signed else (images.v2,)
    candidate = data.draw(st.sampled_from(bases) | image_inputs(bases), label="candidate")
    room = layout.slot1.size - layout.trailer_sectors() * layout.sector_size
    candidate = candidate[:room]
    flash = Flash.for_layout(layout)
    pri, sec = flash.area(layout.slot0), flash.area(layout.slot1)
    pad = lambda b: b + b"\xff" * (-len(b) % layout.write_size)  # noqa: E731
    pri.write(0, pad(running))
    if candidate:
        sec.write(0, pad(candidate))
    if trailer in ("test", "permanent"):
        mb.set_pending(sec, trailer == "permanent", 0, layout.max_align)
    elif trailer == "random":
        tail = data.draw(st.binary(min_size=1, max_size=layout.trailer_size()))
        tail = pad(tail)
        start = layout.slot1.size - len(tail)
        if all(b == 0xFF for b in sec.read(start, len(tail))):
            sec.write(start, tail)
    valid = valid_image(candidate, keys, layout)
    old = bimg.parse_image(running).sha256_tlv
    for n in range(2):
        result = boot(flash, layout, keys)
        assert result.booted is not None, result.panic
        assert_primary_valid(flash, layout, keys)
        booted = bytes.fromhex(result.booted.hash)
        if n == 0:
            event("swapped in the new image" if booted != old else "kept the running image")
        if booted != old:
            assert valid, "an image that does not validate was swapped in"
            new = bimg.parse_image(candidate)
            assert booted == new.hash_tlv().value  # type: ignore[union-attr]
        elif n == 0 and trailer in ("test", "permanent") and valid:
            raise AssertionError("a valid pending image was not swapped in")


# -- board layouts and bridge configs -------------------------------------------------------------


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(BOARD_TREES)))
def test_fuzz_parse_layout(data: st.DataObject, name: str) -> None:
    """LayoutError or a layout MCUboot can work with."""
    base = BOARD_TREES[name]
    paths = [*leaf_paths(base), ("partitions", "slot2", "offset"), ("flash", "program_page_size")]
    tree = mutate_tree(data.draw, base, paths, layout_values, max_ops=2)
    try:
        lay = parse_layout(tree, "fuzz")
    except LayoutError as exc:
        event("LayoutError")
        assert str(exc)
        return
    event("accepted")
    assert lay.sector_size > 0 and lay.flash_size % lay.sector_size == 0
    parts = sorted(lay.partitions.values(), key=lambda p: p.offset)
    assert all(p.size > 0 and p.end <= lay.flash_size for p in parts)
    assert all(a.end <= b.offset for a, b in itertools.pairwise(parts))
    assert lay.max_image_size() >= lay.header_size + lay.sector_size
    assert isinstance(lay.program_page_size, int) and lay.program_page_size >= 0
    assert lay.imgtool_args()


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(BOARD_TREES)))
def test_fuzz_load_layout_file(data: st.DataObject, name: str, scratch: Path) -> None:
    raw = (BOARDS_DIR / f"{name}.toml").read_bytes()
    path = scratch / "board.toml"
    path.write_bytes(data.draw(mutated(raw) | st.binary(max_size=200)))
    with contextlib.suppress(LayoutError):  # anything else fails the test
        load_layout(path)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scratch")


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("config")
    for name in ("ca.pem", "cert.pem", "key.pem", "signing.pem"):
        (d / name).write_text("not checked here\n")
    return d


@FUZZ
@given(data=st.data())
def test_fuzz_parse_config(config_dir: Path, data: st.DataObject) -> None:
    """ConfigError or a config the daemon can run with; TLS unless plaintext is asked for."""
    tree = mutate_tree(data.draw, BASE_CONFIG, CONFIG_PATHS, config_values)
    if data.draw(st.integers(0, 9)) == 0:
        tree[data.draw(st.sampled_from(("device", "broker", "policy", "download")))] = data.draw(
            toml_values
        )
    try:
        cfg = parse_config(tree, config_dir)
    except ConfigError as exc:
        event("ConfigError")
        assert str(exc)
        return
    event("accepted")
    plaintext = tree["broker"].get("insecure_plaintext") is True
    assert (cfg.broker.tls is None) == plaintext
    if cfg.broker.tls is not None:
        assert Path(cfg.broker.tls.ca).exists()
    assert 1 <= cfg.broker.port <= 65535
    assert cfg.devices and len({d.thing for d in cfg.devices}) == len(cfg.devices)
    assert all(d.baud > 0 and d.framing in ("console", "raw") for d in cfg.devices)
    for value in (cfg.confirm_timeout_s, cfg.boot_timeout_s):
        assert math.isfinite(value) and value > 0
    assert math.isfinite(cfg.progress_interval_s) and cfg.progress_interval_s >= 0
    assert all(THING_NAME.fullmatch(d.thing) for d in cfg.devices)
    assert cfg.step_timeout_min is None or 1 <= cfg.step_timeout_min <= 10080
    assert cfg.allowed_hosts is None or all(isinstance(h, str) and h for h in cfg.allowed_hosts)
    assert all(isinstance(p, Path) for p in cfg.trusted_keys)
    assert isinstance(cfg.allow_http, bool)


# -- the local jobs service: a device's request ---------------------------------------------------


@pytest.fixture(scope="module")
def jobs_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobsApi]:
    store = JobStore(
        tmp_path_factory.mktemp("jobs") / "jobs.sqlite3", clock=lambda: 1_700_000_000.0
    )
    for job_id in ("j1", "j2"):
        store.create_job(job_id, THINGS, FIRMWARE_DOC, step_timeout_minutes=30)
    yield JobsApi(store, presign=lambda url: f"{url}?{'X-Amz-Signature=' + SECRET}")
    store.close()


@FUZZ
@given(topic=topics, payload=payloads)
def test_fuzz_jobs_api_request(jobs_api: JobsApi, topic: str, payload: bytes) -> None:
    """Any request gets one reply on <topic>/accepted or /rejected, never an internal error."""
    reply = jobs_api.handle(topic, payload)
    if parse_topic(topic) is None:
        assert reply is None
        return
    assert reply is not None and reply.topic in (f"{topic}/accepted", f"{topic}/rejected")
    text = json.dumps(reply.payload)
    assert reply.payload.get("code") != jobs_model.INTERNAL_ERROR, text
    event(reply.topic.rsplit("/", 1)[1] + " " + str(reply.payload.get("code", "")))


# -- the SMP client: a device's replies -----------------------------------------------------------


@FUZZ
@given(
    body=reply_maps | json_values | st.binary(max_size=40).map(cbor2_or_none),
    group=st.integers(0, 64),
)
def test_fuzz_check_reply(body: Any, group: int) -> None:
    try:
        checked = check_reply(body, group, "fuzz")
    except DeviceError as exc:
        assert isinstance(exc.rc, int) and str(exc).startswith("fuzz: ")
        return
    assert checked is body and isinstance(body, dict)


@FUZZ
@given(data=st.data())
def test_fuzz_upload_replies(data: st.DataObject) -> None:
    """The upload's reply reader: a checked map for a chunk in flight, DeviceError, or None."""
    seqs = data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=4, unique=True))
    replies = data.draw(st.lists(device_replies(seqs), max_size=6))
    client = SmpClient(FakeLink(replies))  # type: ignore[arg-type]
    state = _State(10_000, 256, 256, 4, 115200, 1.0)
    state.inflight = [(seq, i * 256, 256, 0.0) for i, seq in enumerate(seqs)]
    for _ in range(len(replies) + 1):
        try:
            got = _next_reply(client, state, 1.0)
        except DeviceError:
            event("DeviceError")
            continue
        if got is None:
            break
        seq, off, n, _sent_at, body = got
        assert isinstance(body, dict) and (seq, off, n) in [
            (s, i * 256, 256) for i, s in enumerate(seqs)
        ]
        event("reply")


slot_rows = st.fixed_dictionaries(
    {},
    optional={
        "slot": int_values | st.text(max_size=2),
        "image": int_values | st.none(),
        "version": st.text(max_size=8) | st.integers(0, 9),
        "hash": st.binary(max_size=33) | st.text(max_size=4) | st.integers(0, 40),
        **{k: st.booleans() | st.integers(0, 1) | st.none() for k in ("active", "pending")},
    },
)
client_bodies = st.fixed_dictionaries(
    {},
    optional={
        "images": st.lists(slot_rows | json_values, max_size=3) | json_values,
        "buf_size": int_values | st.text(max_size=3) | st.none(),
        "buf_count": int_values | st.floats(),
        "r": json_values,
        "rc": int_values | st.text(max_size=2),
        "err": st.fixed_dictionaries({}, optional={"group": int_values, "rc": int_values}),
    },
)


@FUZZ
@given(body=client_bodies | json_values, command=st.sampled_from(CLIENT_COMMANDS))
def test_fuzz_smp_client_replies(body: Any, command: str) -> None:
    """Every command returns its typed value for any reply, or raises a BridgeError."""
    client = SmpClient(AnsweringLink(body), timeout_s=0.05, retries=0)  # type: ignore[arg-type]
    try:
        result = run_command(client, command)
    except BridgeError as exc:
        event(f"{command}: {type(exc).__name__}")
        return
    event(f"{command}: ok")
    if command == "params":
        assert result is None or (result.buf_size > 0 and result.buf_count > 0)
    elif command in ("image_state", "state_write"):
        assert all(isinstance(s, SlotState) and isinstance(s.hash, bytes) for s in result)
    elif command == "echo":
        assert isinstance(result, str)


# -- bugs found by fuzzing, kept as regression tests -----------------------------------------------


def test_jobs_api_deep_nesting(jobs_api: JobsApi) -> None:
    """A payload nested past the JSON decoder's recursion limit should get InvalidJson."""
    try:
        reply = jobs_api.handle("$aws/things/dev-1/jobs/get", b"[" * 100_000)
    except RecursionError:
        pytest.fail("JobsApi.handle lets the decoder's RecursionError out (no reply is sent)")
    assert reply is not None and reply.payload["code"] == jobs_model.INVALID_JSON


@pytest.mark.parametrize(
    "body",
    [
        {"err": {"rc": "x"}},
        {"err": {"rc": 1, "group": "g"}},
        {"err": {"rc": float("inf")}},
        {"err": {"rc": [1]}},
        {"err": {"rc": 1, "group": None}},
    ],
    ids=["rc-text", "group-text", "rc-inf", "rc-list", "group-null"],
)
def test_check_reply_non_integer(body: dict[str, Any]) -> None:
    """A device's error map with a non-integer rc or group should be a DeviceError."""
    try:
        check_reply(body, 1, "fuzz")
    except DeviceError:
        return
    except (ValueError, TypeError, OverflowError) as exc:
        pytest.fail(f"check_reply raises {type(exc).__name__} for {body}")


SHAPES: Final = {  # (command, a reply of the wrong shape)
    "params-empty": ("params", {}),
    "params-text": ("params", {"buf_size": "x", "buf_count": 1}),
    "state-images-null": ("image_state", {"images": None}),
    "state-images-text": ("image_state", {"images": "abc"}),
    "state-row-int": ("image_state", {"images": [1]}),
    "state-hash-text": ("image_state", {"images": [{"hash": "ab"}]}),
    "state-slot-text": ("image_state", {"images": [{"slot": "x"}]}),
    "upload-off-text": ("upload", {"off": "x"}),
    "upload-off-list": ("upload", {"off": [0]}),
}


@pytest.mark.parametrize("case", sorted(SHAPES))
def test_smp_client_reply_shapes(case: str) -> None:
    """A reply map of the wrong shape should be a BridgeError, not a crash of the caller."""

    command, body = SHAPES[case]
    client = SmpClient(AnsweringLink(body), timeout_s=0.1, retries=0)  # type: ignore[arg-type]
    calls = {
        "params": client.params,
        "image_state": client.image_state,
        "upload": lambda: upload(client, b"\x00" * 64, window=1, buf_size=512, max_retries=0),
    }
    try:
        calls[command]()
    except BridgeError:
        return
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        pytest.fail(f"SmpClient {command} raises {type(exc).__name__} on {body}")


@pytest.mark.parametrize("body", [{"off": 5}, {"off": 0}, {}], ids=["off-5", "off-0", "no-off"])
def test_upload_gives_up_on_a_device_stuck_at_one_offset(body: dict[str, Any]) -> None:
    """A device that answers every chunk with the same offset must not keep the upload going."""

    link = AnsweringLink(body, budget=2000)
    client = SmpClient(link, timeout_s=0.05, retries=0)  # type: ignore[arg-type]
    try:
        upload(client, b"\x00" * 4096, window=2, buf_size=512, max_retries=2)
    except BridgeError:
        return
    except Runaway:
        pytest.fail(f"upload keeps resending to a device stuck at {body}: {len(link.sent)} packets")
    raise AssertionError("the upload finished against a device that never took a byte")


def test_upload_refuses_an_offset_past_the_image() -> None:
    """A device claiming more bytes than the image has is a malformed reply, not a finish."""

    client = SmpClient(AnsweringLink({"off": 10**6}), timeout_s=0.05, retries=0)  # type: ignore[arg-type]
    try:
        result = upload(client, b"\x00" * 4096, window=2, buf_size=512, max_retries=2)
    except BridgeError:
        return
    pytest.fail(f"upload accepted an offset past the image as done: {result}")
