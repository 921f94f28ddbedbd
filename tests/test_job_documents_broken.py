"""Job documents: a table of broken documents and texts, each refused with one line that
says why and never shows a query string.
"""

from __future__ import annotations

import json

import pytest
from job_documents_kit import (
    H32,
    H64,
    NATIVE,
    NORDIC,
    PRESIGNED,
    SECRET,
    SEED,
    URL,
    location,
    with_,
)

from fota_common.errors import BridgeError
from host_bridge.jobs.documents import (
    MAX_DOCUMENT_CHARS,
    DocumentError,
    FirmwareJob,
    parse_document,
    parse_document_text,
)

# --- broken documents ---------------------------------------------------------------------------

BROKEN: list[tuple[str, object, str]] = [
    # (id, document, what the reason must contain)
    ("list", [SEED], "job document must be a JSON object, got a list"),
    ("string", "bc_url", "job document must be a JSON object, got 'bc_url'"),
    ("null", None, "job document must be a JSON object, got null"),
    ("operation-number", {"operation": 5}, "operation must be a string, got 5"),
    ("mixed-forms", {**SEED, "url": URL}, "mixes the seed (bc_*) and native (url) forms"),
    ("mixed-forms-2", {"location": {}, "url": URL}, "mixes the Nordic (location) and native"),
    # ours
    ("native-no-url", with_(NATIVE, url=...), "missing field 'url'"),
    ("native-no-hash", with_(NATIVE, sha256=..., md5=...), "missing field 'sha256' (or 'md5')"),
    ("url-number", with_(NATIVE, url=42), "url must be a string, got 42"),
    ("url-null", with_(NATIVE, url=None), "url must be a string, got null"),
    ("url-empty", with_(NATIVE, url=""), "url is empty"),
    (
        "url-http",
        with_(NATIVE, url="http://h.example/fw.bin"),
        "url must be https:// (plain http is allowed only with allow_http)",
    ),
    (
        "url-ftp",
        with_(NATIVE, url="ftp://h.example/fw.bin"),
        "url must be an https:// URL, got 'ftp://h.example/fw.bin'",
    ),
    ("url-relative", with_(NATIVE, url="fw.bin"), "url must be an https:// URL, got 'fw.bin'"),
    ("url-no-host", with_(NATIVE, url="https:///fw.bin"), "url has no host: 'https:///fw.bin'"),
    (
        "url-space",
        with_(NATIVE, url="https://h.example/my fw.bin"),
        "url must be plain ASCII without spaces",
    ),
    ("url-non-ascii", with_(NATIVE, url="https://h.example/fw-ü.bin"), "url must be plain ASCII"),
    (
        "url-userinfo",
        with_(NATIVE, url="https://me:pw@h.example/fw.bin"),
        "url must not carry user:password@ credentials",
    ),
    ("url-port", with_(NATIVE, url="https://h.example:99999/fw.bin"), "url is not a valid URL"),
    ("url-ipv6", with_(NATIVE, url="https://[::1/fw.bin"), "url is not a valid URL"),
    (
        "url-other-placeholder",
        with_(NATIVE, url="${aws:iot:parameter:fw}"),
        "url holds a placeholder other than ${aws:iot:s3-presigned-url:...}",
    ),
    (
        "url-placeholder-http",
        with_(NATIVE, url="${aws:iot:s3-presigned-url:http://h/x}"),
        "url must be https://",
    ),
    ("url-placeholder-empty", with_(NATIVE, url="${aws:iot:s3-presigned-url:}"), "url is empty"),
    (
        "sha256-short",
        with_(NATIVE, sha256="xyz"),
        "sha256 must be 64 hex digits (a SHA-256), got 'xyz'",
    ),
    ("sha256-not-hex", with_(NATIVE, sha256="g" * 64), "sha256 must be 64 hex digits"),
    (
        "sha256-bytes-list",
        with_(NATIVE, sha256=[1, 2]),
        "sha256 must be 64 hex digits (a SHA-256), got a list",
    ),
    ("md5-31", with_(NATIVE, md5=H32[:-1]), "md5 must be 32 hex digits (an MD5)"),
    ("size-negative", with_(NATIVE, size=-5), "size must be a positive integer, got -5"),
    ("size-zero", with_(NATIVE, size=0), "size must be a positive integer, got 0"),
    ("size-bool", with_(NATIVE, size=True), "size must be a positive integer, got true"),
    ("size-float", with_(NATIVE, size=1.5), "size must be a positive integer, got 1.5"),
    ("size-string", with_(NATIVE, size="181124"), "size must be a positive integer, got '181124'"),
    (
        "size-huge",
        with_(NATIVE, size=2**32 + 1),
        "size must be at most 4294967296 bytes, got 4294967297",
    ),
    (
        "version-two-parts",
        with_(NATIVE, version="1.2"),
        "version must be MAJOR.MINOR.REVISION[+BUILD] (e.g. 1.2.3 or v1.2.3+4), got '1.2'",
    ),
    ("version-suffix", with_(NATIVE, version="1.2.3-rc1"), "got '1.2.3-rc1'"),
    ("version-number", with_(NATIVE, version=1), "version must be MAJOR.MINOR.REVISION"),
    (
        "version-range",
        with_(NATIVE, version="256.0.0"),
        "version '256.0.0' is outside MCUboot's range (major and minor 0..255",
    ),
    ("version-revision", with_(NATIVE, version="1.0.65536"), "outside MCUboot's range"),
    (
        "image-negative",
        with_(NATIVE, image=-1),
        "image must be an MCUboot image number 0..255, got -1",
    ),
    ("image-string", with_(NATIVE, image="0"), "image must be an MCUboot image number"),
    (
        "signed-string",
        with_(NATIVE, signed="yes"),
        "signed must be true (an MCUboot image) or false (a raw binary), got 'yes'",
    ),
    # the seed's
    ("seed-no-url", with_(SEED, bc_url=...), "missing field 'bc_url'"),
    ("seed-no-crc", with_(SEED, bc_crc=...), "missing field 'bc_crc'"),
    ("seed-no-size", with_(SEED, bc_size=...), "missing field 'bc_size'"),
    ("seed-crc", with_(SEED, bc_crc="xyz"), "bc_crc must be 32 hex digits (an MD5), got 'xyz'"),
    ("seed-crc-sha256", with_(SEED, bc_crc=H64), "bc_crc must be 32 hex digits (an MD5)"),
    ("seed-size", with_(SEED, bc_size=-5), "bc_size must be a positive integer, got -5"),
    ("seed-size-null", with_(SEED, bc_size=None), "bc_size must be a positive integer, got null"),
    (
        "seed-idx",
        with_(SEED, bc_idx=2),
        "bc_idx must be 0 or 1 (both mean: write image 0's secondary slot), got 2",
    ),
    ("seed-idx-bool", with_(SEED, bc_idx=True), "bc_idx must be 0 or 1"),
    ("seed-http", with_(SEED, bc_url="http://h.example/fw"), "bc_url must be https://"),
    # Nordic's
    ("nordic-no-location", with_(NORDIC, location=...), "missing field 'location'"),
    (
        "nordic-location-string",
        with_(NORDIC, location="https://h/x"),
        "location must be an object with protocol, host and path, got 'https://h/x'",
    ),
    (
        "nordic-protocol",
        location(protocol="ftp:"),
        "location.protocol must be 'https:' (or 'http:' with allow_http), got 'ftp:'",
    ),
    ("nordic-http", location(protocol="http:"), "location must be https://"),
    ("nordic-no-host", location(host=...), "missing field 'location.host'"),
    ("nordic-host-url", location(host="https://b.example"), "location.host must be a host name"),
    ("nordic-no-path", location(path=...), "missing field 'location.path'"),
    ("nordic-empty-path", location(path="/"), "location.path must be the file's path on the host"),
    (
        "nordic-url-number",
        with_(NORDIC, location={"url": 7}),
        "location.url must be a string, got 7",
    ),
    ("nordic-version", with_(NORDIC, fwversion="1.0"), "fwversion must be MAJOR.MINOR.REVISION"),
    ("nordic-size", with_(NORDIC, size=0), "size must be a positive integer, got 0"),
    (
        "too-long",
        {**SEED, "notes": "x" * MAX_DOCUMENT_CHARS},
        f"characters; AWS IoT allows {MAX_DOCUMENT_CHARS}",
    ),
]


@pytest.mark.parametrize(
    ("doc", "reason"), [(d, r) for _, d, r in BROKEN], ids=[i for i, _, _ in BROKEN]
)
def test_broken_documents(doc: object, reason: str) -> None:
    with pytest.raises(DocumentError) as e:
        parse_document(doc)
    assert reason in e.value.reason, e.value.reason
    assert isinstance(e.value, BridgeError) and str(e.value) == e.value.reason
    assert "\n" not in e.value.reason


def test_there_are_plenty_of_broken_documents() -> None:
    assert len(BROKEN) >= 25 and len({i for i, _, _ in BROKEN}) == len(BROKEN)


def test_length_limit_uses_the_raw_text_length() -> None:
    with pytest.raises(DocumentError) as e:
        parse_document(SEED, raw_length=40000)
    assert e.value.reason == "job document is 40000 characters; AWS IoT allows 32768"
    assert isinstance(parse_document(SEED, raw_length=MAX_DOCUMENT_CHARS), FirmwareJob)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "{",
            "job document is not valid JSON: Expecting property name enclosed in double quotes"
            " at line 1 column 2",
        ),
        (b"\xff{}", "job document is not UTF-8 (byte 0)"),
        (" " * 40000 + "{}", "job document is 40002 characters; AWS IoT allows 32768"),
        ("[" * 16000 + "]" * 16000, "job document is not valid JSON"),
        ("[1, 2]", "job document must be a JSON object, got a list"),
    ],
)
def test_broken_text(text: str | bytes, reason: str) -> None:
    with pytest.raises(DocumentError) as e:
        parse_document_text(text)
    assert e.value.reason.startswith(reason), e.value.reason


def test_document_text() -> None:
    assert parse_document_text(json.dumps(NATIVE)) == parse_document(NATIVE)
    assert parse_document_text(json.dumps(SEED).encode()) == parse_document(SEED)


def test_not_json_data() -> None:
    with pytest.raises(DocumentError, match="not JSON data"):
        parse_document({"url": object()})


def test_reasons_never_show_a_query_string() -> None:
    for url in (
        PRESIGNED.replace("https:", "http:"),
        PRESIGNED.replace("https:", "ftp:"),
        PRESIGNED.replace("amazonaws.com", "amazonaws.com:99999"),
        f"https://{SECRET}:{SECRET}@h.example/fw.bin",
    ):
        with pytest.raises(DocumentError) as e:
            parse_document(with_(NATIVE, url=url))
        assert SECRET not in e.value.reason and "X-Amz" not in e.value.reason
    with pytest.raises(DocumentError) as e:
        parse_document(with_(NATIVE, version=PRESIGNED))
    assert SECRET not in e.value.reason
