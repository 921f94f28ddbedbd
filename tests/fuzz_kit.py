"""Strategies for tests/test_fuzz.py: mutators that keep inputs near the valid ones.

Random bytes alone rarely get past a magic number or a CRC, so every parser is also fed its
own valid inputs (imgtool-signed images, encoded frames, real job documents and configs) with
a few mutations applied: bit flips, "interesting" integers written over length fields, inserted,
deleted, duplicated and truncated ranges. Positions are drawn from the input's hot spots (its
header and TLV area, say) half of the time.

The settings come from the profiles registered in conftest.py: ``fuzz`` by default (what
``just test`` runs) or the one named by FOTA_FUZZ_PROFILE (``reliability``: 10,000 cases per
parser).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
import tomllib
from collections.abc import Sequence
from typing import Any, Final

import cbor2
from hypothesis import settings
from hypothesis import strategies as st

from bootloader.formats.layout import BOARDS_DIR
from mcu import smp_frame as sf

PROFILE: Final = os.environ.get("FOTA_FUZZ_PROFILE", "fuzz")
FUZZ: Final = settings.get_profile(PROFILE)  # raises InvalidArgument for an unknown name
# pytest-timeout per test: a hang is caught here, a slow example by the profile's deadline.
TIMEOUT_S: Final = max(300, FUZZ.max_examples // 4)

# A query string value that must never reach a log line, a message or statusDetails.
SECRET: Final = "c2VjcmV0LXNpZ25hdHVyZS12YWx1ZQ"

U8: Final = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
U16: Final = (0, 1, 2, 0x7F, 0xFF, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
U32: Final = (0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF)
_OPS: Final = ("flip", "byte", "u16", "u32", "insert", "delete", "truncate", "duplicate")


@st.composite
def mutated(draw: st.DrawFn, base: bytes, hot: Sequence[range] = (), max_ops: int = 4) -> bytes:
    """``base`` with 1..max_ops mutations; positions favour the ``hot`` ranges."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_ops))):
        n = len(data)
        op = draw(st.sampled_from(_OPS))
        if n == 0:
            data += draw(st.binary(min_size=1, max_size=16))
            continue
        spots = [r for r in hot if r and r.start < n]
        if spots and draw(st.booleans()):
            r = draw(st.sampled_from(spots))
            i = draw(st.integers(r.start, min(r.stop, n) - 1))
        else:
            i = draw(st.integers(0, n - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[i] = draw(st.sampled_from(U8) | st.integers(0, 255))
        elif op in ("u16", "u32"):
            fmt = draw(st.sampled_from(("<", ">"))) + ("H" if op == "u16" else "I")
            table = U16 if op == "u16" else U32
            size = struct.calcsize(fmt)
            limit = (1 << (8 * size)) - 1
            near = (n - i) & limit  # "the rest of the input": a plausible length
            value = draw(st.sampled_from((*table, near, (near + 1) & limit)))
            data[i : i + size] = struct.pack(fmt, value)[: max(0, n - i)]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[i:]
        else:
            j = draw(st.integers(0, n - 1))
            data[j:j] = data[i : i + draw(st.integers(1, 32))]
    return bytes(data)


def chunked(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at the given positions (taken modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


# -- JSON values and documents --------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from((0, 1, -1, 255, 256, 2**32, 2**32 + 1, 2**64))
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)

HEX64: Final = "ab" * 32
HEX32: Final = "cd" * 16
QUERY: Final = f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=600&X-Amz-Signature={SECRET}"
_HEADS: Final = (
    "https://bucket.s3.amazonaws.com/fw.bin",
    "http://bucket.s3.amazonaws.com/fw.bin",
    "ftp://bucket.s3.amazonaws.com/fw.bin",
    "https://user:pw@bucket.s3.amazonaws.com/fw.bin",
    "https://bucket.s3.amazonaws.com:99999/fw.bin",
    "https://bucket.s3.amazonaws.com:x/fw.bin",
    "https://[::1/fw.bin",
    "https:///fw.bin",
    "https://evil.example/fw.bin",
    "https://bucket.s3.amazonaws.com/f\u00fc.bin",
    "https://bucket.s3.amazonaws.com/f w.bin",
    "${aws:iot:s3-presigned-url:https://bucket.s3.amazonaws.com/fw.bin",
    "${aws:iot:other:https://bucket.s3.amazonaws.com/fw.bin",
)
# URLs whose query string carries SECRET: valid ones and every way of being refused.
SECRET_URLS: Final = (
    *(f"{head}?{QUERY}" for head in _HEADS),
    f"${{aws:iot:s3-presigned-url:https://bucket.s3.amazonaws.com/fw.bin?{QUERY}}}",
    f"${{aws:iot:s3-presigned-url-v2:http://bucket.s3.amazonaws.com/fw.bin?{QUERY}}}",
    f"${{aws:iot:s3-presigned-url:https://bucket.s3.amazonaws.com/fw.bin?{QUERY}}}}}",
)
URL_VALUES: Final = (
    "https://h.example/fw.bin",
    "http://h.example/fw.bin",
    "https://h.example",
    "https://",
    "",
    " ",
    "https://h.example/fw.bin#frag",
    "${aws:iot:s3-presigned-url:https://h.example/fw.bin}",
    "${aws:iot:s3-presigned-url:}",
    "${}",
    "https://h.example:0/x",
    "https://h.example:65536/x",
    "https://@h.example/x",
    "https://h.example/\x00",
    "HTTPS://H.EXAMPLE/X",
    *SECRET_URLS,
)
_FIELD_VALUES: Final[dict[str, Any]] = {
    "operation": st.sampled_from(("fota", "app_fw_update", "other", "", "FOTA")),
    "url": st.sampled_from(URL_VALUES),
    "bc_url": st.sampled_from(URL_VALUES),
    "sha256": st.sampled_from((HEX64, HEX64.upper(), HEX64[:-1], HEX64 + "0", "zz" * 32, "")),
    "md5": st.sampled_from((HEX32, HEX32[:-1], "g" * 32)),
    "bc_crc": st.sampled_from((HEX32, HEX32[:-1], "g" * 32)),
    "size": st.sampled_from((1, 0, -1, 2**32, 2**32 + 1, 1.5, "10", True)),
    "bc_size": st.sampled_from((1, 0, -1, 2**32, 2**32 + 1, 1.5, "10", True)),
    "bc_idx": st.sampled_from((0, 1, 2, -1, True, "0")),
    "version": st.sampled_from(
        (
            "1.2.3",
            "v1.2.3+4",
            "1.2",
            "256.0.0",
            "1.2.65536",
            "1.2.3+4294967296",
            "1.2.3+",
            "1.2.\u00b2",
            "\u0661.2.3",
            "1.2.3.4",
            "v",
            "",
        )
    ),
    "fwversion": st.sampled_from(("v1.0.2", "1.0", "x", "1.0.\u00b3")),
    "image": st.sampled_from((0, 255, 256, -1, True, "0")),
    "signed": st.sampled_from((True, False, 1, "yes")),
}
_LOCATION_VALUES: Final[dict[str, Any]] = {
    "protocol": st.sampled_from(("https:", "https", "http:", "HTTPS:", "ftp:", "", 1)),
    "host": st.sampled_from(("b.s3.amazonaws.com", "", "a/b", "a?b", "a@b", "a b", "h:1")),
    "path": st.sampled_from(("fw.bin", "/fw.bin", "/", "", "a?b=c", "\u00fc")),
    "url": st.sampled_from(URL_VALUES),
}

VALID_DOCUMENTS: Final = (
    {
        "operation": "fota",
        "url": "https://h.example/fw.bin",
        "size": 1000,
        "sha256": HEX64,
        "version": "1.2.3+4",
        "image": 0,
        "signed": True,
    },
    {"url": f"${{aws:iot:s3-presigned-url:https://h.example/fw.bin?{QUERY}}}", "md5": HEX32},
    {"bc_idx": 1, "bc_crc": HEX32, "bc_size": 4096, "bc_url": "https://h.example/a.bin"},
    {
        "operation": "app_fw_update",
        "fwversion": "v1.0.2",
        "size": 181124,
        "location": {"protocol": "https:", "host": "b.s3.amazonaws.com", "path": "fw.bin"},
    },
    {"operation": "app_fw_update", "location": {"url": SECRET_URLS[0]}},
    {"operation": "reboot", "delay": 5},
    {"note": "no firmware here"},
)


@st.composite
def job_documents(draw: st.DrawFn) -> object:
    """A real document with fields replaced, removed or added; sometimes any JSON value."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    doc: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(VALID_DOCUMENTS))))
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from((*_FIELD_VALUES, "location", "extra")))
        what = draw(st.sampled_from(("typed", "any", "delete", "null")))
        if what == "delete":
            doc.pop(key, None)
        elif what == "null":
            doc[key] = None
        elif key == "location":
            loc = doc.get("location")
            loc = dict(loc) if isinstance(loc, dict) else {}
            sub = draw(st.sampled_from(tuple(_LOCATION_VALUES)))
            loc[sub] = draw(_LOCATION_VALUES[sub] | json_values)
            doc["location"] = loc if what == "typed" else draw(st.just(loc) | json_values)
        elif what == "typed" and key in _FIELD_VALUES:
            doc[key] = draw(_FIELD_VALUES[key])
        else:
            doc[key] = draw(json_values)
    return doc


@st.composite
def document_texts(draw: st.DrawFn) -> str | bytes:
    """JSON text of a mutated document, mangled text, deep nesting, or random text/bytes."""
    kind = draw(st.sampled_from(("json", "mangled", "deep", "text", "bytes", "long")))
    if kind == "json":
        return json.dumps(draw(job_documents()))
    if kind == "mangled":
        raw = json.dumps(draw(job_documents())).encode()
        return draw(mutated(raw)).decode("utf-8", "replace")
    if kind == "deep":
        depth = draw(st.integers(1, 20_000))
        return draw(st.sampled_from(("[", '{"a":', "[{}, "))) * depth
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "long":
        return json.dumps({"url": "https://h/x", "pad": "x" * draw(st.integers(32_700, 33_000))})
    return draw(st.binary(max_size=200))


def mutate_tree(
    draw: st.DrawFn,
    tree: dict[str, Any],
    paths: Sequence[tuple[str, ...]],
    values: st.SearchStrategy[Any],
    max_ops: int = 4,
) -> dict[str, Any]:
    """A deep copy of a TOML-like ``tree`` with values at ``paths`` replaced or deleted."""
    out: dict[str, Any] = json.loads(json.dumps(tree))
    for _ in range(draw(st.integers(1, max_ops))):
        path = draw(st.sampled_from(paths))
        node: Any = out
        for key in path[:-1]:
            if isinstance(node, list):
                node = node[0] if node else {}
            elif isinstance(node, dict):
                node = node.setdefault(key, {})
            else:
                break
        if not isinstance(node, dict):
            continue
        if draw(st.integers(0, 4)) == 0:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = draw(values)
    return out


toml_values = st.recursive(
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.sampled_from((0, 1, -1, 8, 16, 32, 0x200, 0x1000, 0x4000, 2**31, 2**63 - 1))
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


# -- MCUboot images -------------------------------------------------------------------------------

TLV_TYPES: Final = (0x01, 0x02, 0x10, 0x11, 0x12, 0x20, 0x22, 0x24, 0x25, 0x40, 0x50, 0x60, 0x70)


def image_hot_spots(image: bytes) -> tuple[range, ...]:
    """The header and the TLV area of a well-formed image: where mutations bite."""
    hdr_size, _prot, img_size = struct.unpack_from("<HHI", image, 8)
    tlvs = hdr_size + img_size
    return (range(0, 32), range(tlvs, len(image)), range(tlvs - 4, tlvs + 8))


@st.composite
def tlv_rebuilt(draw: st.DrawFn, base: bytes) -> bytes:
    """``base``'s header and body with new TLV areas: unknown, repeated, lying or valid TLVs.

    The SHA-256 TLV offered is the true digest of the new hash region, so some of these are
    valid images with unusual TLV layouts (protected TLVs, padding TLVs, a hash TLV last).
    """
    hdr_size, _prot, img_size = struct.unpack_from("<HHI", base, 8)
    head = bytearray(base[: hdr_size + img_size])
    lie16 = st.sampled_from(U16)

    def area(magic: int, entries: list[tuple[int, bytes]]) -> bytes:
        out = bytearray()
        for tlv_type, value in entries:
            length = draw(lie16) if draw(st.integers(0, 9)) == 0 else len(value)
            out += struct.pack("<HH", tlv_type, length) + value
        tot = len(out) + 4
        if draw(st.integers(0, 9)) == 0:
            tot = draw(lie16)
        return struct.pack("<HH", magic, tot) + out

    entries = st.lists(
        st.tuples(st.sampled_from(TLV_TYPES) | st.integers(0, 0xFFFF), st.binary(max_size=72)),
        max_size=4,
    )
    prot = area(0x6908, draw(entries)) if draw(st.booleans()) else b""
    prot_size = len(prot)
    if draw(st.integers(0, 9)) == 0:
        prot_size = draw(lie16)
    struct.pack_into("<H", head, 10, prot_size)
    digest = hashlib.sha256(bytes(head) + prot).digest()
    unprot = draw(entries)
    if draw(st.integers(0, 3)):
        unprot.insert(draw(st.integers(0, len(unprot))), (0x10, digest))
    return bytes(head) + prot + area(0x6907, unprot) + draw(st.binary(max_size=8))


@st.composite
def image_inputs(draw: st.DrawFn, bases: Sequence[bytes]) -> bytes:
    """A base image, mutated or with new TLVs; or random bytes, with or without the magic."""
    kind = draw(st.sampled_from(("mutated", "mutated", "tlvs", "random", "magic", "base")))
    if kind in ("random", "magic"):
        raw = draw(st.binary(max_size=300))
        return (b"\x3d\xb8\xf3\x96" + raw) if kind == "magic" else raw
    base = draw(st.sampled_from(bases))
    if kind == "base":
        return base
    if kind == "tlvs":
        return draw(tlv_rebuilt(base))
    return draw(mutated(base, image_hot_spots(base)))


# -- CBOR, SMP requests, uploads -----------------------------------------------------------------

cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats()
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.integers() | st.text(max_size=6) | st.binary(max_size=4), inner, max_size=4
        )
    ),
    max_leaves=16,
)


@st.composite
def cbor_inputs(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(("random", "value", "mutated", "deep", "claim", "indefinite")))
    if kind == "random":
        return draw(st.binary(max_size=64))
    if kind == "deep":
        head = draw(st.sampled_from((b"\x81", b"\x9f", b"\xa1\x00", b"\xbf\x00", b"\xc1")))
        return head * draw(st.integers(1, 5000)) + draw(st.binary(max_size=4))
    if kind == "claim":  # a length or count far past the end of the buffer
        major = draw(st.sampled_from((2, 3, 4, 5)))
        ai, fmt = draw(st.sampled_from(((25, ">H"), (26, ">I"), (27, ">Q"))))
        n = draw(st.sampled_from((0xFFFF, 0xFFFF_FFFF, 2**64 - 1))) & (
            (1 << (8 * struct.calcsize(fmt))) - 1
        )
        return bytes([major << 5 | ai]) + struct.pack(fmt, n) + draw(st.binary(max_size=8))
    if kind == "indefinite":
        major = draw(st.sampled_from((2, 3)))
        chunks = draw(st.lists(st.binary(max_size=6), max_size=4))
        body = b"".join(bytes([draw(st.sampled_from((2, 3))) << 5 | len(c)]) + c for c in chunks)
        return bytes([major << 5 | 31]) + body + draw(st.sampled_from((b"\xff", b"", b"\x00")))
    encoded = cbor2.dumps(draw(cbor_values), canonical=draw(st.booleans()))
    return encoded if kind == "value" else draw(mutated(encoded))


encodable = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.integers(-(2**64), 2**64 - 1) | st.text(max_size=6) | st.binary(max_size=4),
            inner,
            max_size=4,
        )
    ),
    max_leaves=16,
)


smp_packets = st.binary(min_size=1, max_size=400)


noise = st.binary(max_size=150).map(lambda b: b.replace(b"\n", b"") + b"\n")


REQUESTS: Final = (  # (op, group, command) of every handler, and a few that have none
    (0, 0, 0),
    (2, 0, 0),
    (2, 0, 5),
    (0, 0, 6),
    (0, 0, 8),
    (0, 1, 0),
    (2, 1, 0),
    (2, 1, 1),
    (2, 1, 5),
    (0, 1, 6),
    (2, 1, 6),
    (0, 9, 0),
    (2, 63, 0),
    (1, 1, 1),
    (3, 0, 0),
)


request_fields = st.dictionaries(
    st.sampled_from(
        (
            "d",
            "off",
            "data",
            "len",
            "sha",
            "image",
            "upgrade",
            "hash",
            "confirm",
            "slot",
            "query",
            "force",
        )
    )
    | st.text(max_size=4),
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.binary(max_size=64)
    | st.text(max_size=8)
    | st.lists(st.integers(0, 3), max_size=2),
    max_size=5,
)


@st.composite
def upload_plans(draw: st.DrawFn, image: bytes) -> list[dict[str, Any]]:
    """The upload requests a host would send for ``image``, with a few of them tampered with."""
    chunk = draw(st.integers(16, 600))
    sha = hashlib.sha256(image).digest()
    plan: list[dict[str, Any]] = []
    for off in range(0, max(len(image), 1), chunk):
        body: dict[str, Any] = {"off": off, "data": image[off : off + chunk]}
        if off == 0:
            body.update({"image": 0, "len": len(image), "sha": sha})
        plan.append(body)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(plan) - 1))
        what = draw(st.sampled_from(("drop", "repeat", "swap", "field", "extend")))
        if what == "drop":
            del plan[i]
        elif what == "repeat":
            plan.insert(i, dict(plan[i]))
        elif what == "swap" and i + 1 < len(plan):
            plan[i], plan[i + 1] = plan[i + 1], plan[i]
        elif what == "extend" and isinstance(plan[i].get("data"), bytes):
            plan[i] = dict(plan[i], data=plan[i]["data"] + draw(st.binary(min_size=1, max_size=40)))
        else:
            key = draw(st.sampled_from(("off", "len", "sha", "image", "upgrade", "data")))
            plan[i] = dict(plan[i])
            plan[i][key] = draw(
                st.integers(0, 2**32)
                | st.sampled_from((len(image) + 1, len(image) - 1, 2**64 - 1))
                | st.binary(max_size=40)
                | st.booleans()
                | st.none()
            )
        if not plan:
            break
    return plan


def leaf_paths(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += leaf_paths(value, (*prefix, key))
        out.append((*prefix, key))
    return out


BOARD_TREES: Final = {
    p.stem: tomllib.loads(p.read_text()) for p in sorted(BOARDS_DIR.glob("*.toml"))
}


# Mostly plausible numbers (sector multiples, powers of two), so that some layouts pass.
near_layout_values = st.integers(0, 64).map(lambda n: n * 0x200) | st.sampled_from(
    ("swap-move", "overwrite-only", "swap-scratch", 0xFF, 0x00, 1, 4, 8, 16, 32, 64, 0x1000)
)


layout_values = st.one_of(near_layout_values, near_layout_values, toml_values)


BASE_CONFIG: Final = {
    "state_dir": "state",
    "broker": {
        "host": "broker.example",
        "port": 8883,
        "client_id": "gw",
        "ca": "ca.pem",
        "cert": "cert.pem",
        "key": "key.pem",
    },
    "download": {"allow_http": False, "allowed_hosts": ["*.amazonaws.com"], "ca": "ca.pem"},
    "signing": {"key": "signing.pem", "trusted_keys": ["signing.pem"]},
    "policy": {
        "confirm": "device",
        "confirm_timeout_s": 60,
        "boot_timeout_s": 30,
        "progress_interval_s": 5,
        "step_timeout_min": 30,
        "other_jobs": "reject",
    },
    "device": [
        {
            "thing": "sensor-01",
            "port": "/dev/ttyUSB0",
            "board": "tiny",
            "baud": 115200,
            "framing": "console",
        }
    ],
}


CONFIG_PATHS: Final = [
    *leaf_paths({k: v for k, v in BASE_CONFIG.items() if k != "device"}),
    ("broker", "insecure_plaintext"),
    *[("device", key) for key in BASE_CONFIG["device"][0]],  # type: ignore[index]
]


config_values = toml_values | st.sampled_from(
    (
        "ca.pem",
        "missing.pem",
        "",
        "nrf52840",
        "no-such-board",
        "/",
        "raw",
        "bridge",
        "ignore",
        0,
        1,
        65535,
        65536,
        -1,
        float("nan"),
        float("inf"),
        ["a", 1],
        [{}],
        True,
    )
)


THINGS: Final = ("dev-1", "dev-2")


FIRMWARE_DOC: Final = json.dumps(
    {
        "operation": "fota",
        "url": "${aws:iot:s3-presigned-url:https://h.example/fw.bin}",
        "sha256": "ab" * 32,
    }
)


jobs_topics = st.builds(
    "$aws/things/{}/jobs/{}".format,
    st.sampled_from(THINGS),
    st.sampled_from(
        (
            "get",
            "start-next",
            "$next/get",
            "j1/get",
            "j1/update",
            "j2/update",
            "$next/update",
            "j9/get",
        )
    ),
)


odd_topics = st.builds(
    "$aws/things/{}/jobs/{}".format,
    st.sampled_from(THINGS) | st.text(max_size=12),
    st.sampled_from(("get/accepted", "a/b/c", "", "j1/update/x", "$next")) | st.text(max_size=12),
)


topics = st.one_of(jobs_topics, jobs_topics, jobs_topics, odd_topics, st.text(max_size=40))


request_values = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=70)
    | st.sampled_from(
        (
            "IN_PROGRESS",
            "SUCCEEDED",
            "FAILED",
            "REJECTED",
            "QUEUED",
            "CANCELED",
            "1",
            "-1",
            "007",
            "1e3",
        )
    )
    | json_values
)


bodies = st.dictionaries(
    st.sampled_from(
        (
            "clientToken",
            "status",
            "statusDetails",
            "expectedVersion",
            "executionNumber",
            "stepTimeoutInMinutes",
            "includeJobDocument",
            "includeJobExecutionState",
        )
    ),
    request_values
    | st.dictionaries(st.text(max_size=10), st.text(max_size=10) | json_values, max_size=3),
    max_size=6,
)


# Nesting stays below the JSON decoder's recursion limit: see test_jobs_api_deep_nesting.
payloads = (
    bodies.map(lambda b: json.dumps(b).encode())
    | st.binary(max_size=80)
    | st.builds(
        lambda text, depth: ("[" * depth + text).encode(), st.text(max_size=10), st.integers(0, 400)
    )
)


def cbor2_or_none(raw: bytes) -> Any:
    try:
        return cbor2.loads(raw)
    except cbor2.CBORDecodeError:
        return None


# Integer rc and group values: what check_reply handles today (see test_check_reply_non_integer).
int_values = st.integers(-(2**70), 2**70) | st.sampled_from((0, 1, 8, 256, True, False))


reply_maps = st.fixed_dictionaries(
    {},
    optional={
        "rc": int_values | st.text(max_size=4) | st.none() | st.floats(),
        "err": st.fixed_dictionaries({}, optional={"group": int_values, "rc": int_values})
        | st.just("x")
        | st.none(),
        "off": st.integers(0, 2**40) | st.none(),
        "match": st.booleans(),
        "other": json_values,
    },
)


@st.composite
def device_replies(draw: st.DrawFn, seqs: list[int]) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=24))
    body = draw(reply_maps.map(cbor2.dumps) | st.binary(max_size=16))
    seq = draw(st.sampled_from(seqs) | st.integers(0, 255))
    op, group, command = draw(
        st.sampled_from(((3, 1, 1), (3, 1, 1), (1, 1, 1), (3, 0, 0), (3, 1, 0)))
    )
    return sf.pack_header(op, 1, 0, len(body) & 0xFFFF, group, seq, command) + body
