"""Job documents: the three forms, the presigned placeholder, and a table of broken documents."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fota_common.errors import BridgeError
from host_bridge.jobs.documents import (
    MAX_DOCUMENT_CHARS,
    DocumentError,
    FirmwareJob,
    OtherJob,
    parse_document,
    parse_document_text,
)
from host_bridge.redact import redact_text, redact_url
from host_bridge.urls import host_allowed, is_presigned, presigned_expiry, url_problem

URL = "https://fw-bucket.s3.eu-west-1.amazonaws.com/app/v1.2.3.bin"
H64 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
H32 = "098f6bcd4621d373cade4e832627b4f6"
SECRET = "c2VjcmV0LXNpZ25hdHVyZQ"
PRESIGNED = (
    f"{URL}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20240101%2F"
    f"eu-west-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600"
    f"&X-Amz-SignedHeaders=host&X-Amz-Signature={SECRET}"
)

SEED: dict[str, Any] = {"bc_idx": 1, "bc_crc": H32, "bc_size": 181124, "bc_url": URL}
NORDIC: dict[str, Any] = {
    "operation": "app_fw_update",
    "fwversion": "v1.0.2",
    "size": 181124,
    "location": {"protocol": "https:", "host": "fw-bucket.amazonaws.com", "path": "app.bin"},
}
NATIVE: dict[str, Any] = {
    "operation": "fota",
    "url": URL,
    "size": 181124,
    "sha256": H64,
    "md5": H32,
    "version": "v1.2.3+4",
    "image": 1,
    "signed": True,
}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``base`` with fields changed; a value of ``...`` removes the field."""
    doc = {**base, **changes}
    return {k: v for k, v in doc.items() if v is not ...}


def location(**changes: Any) -> dict[str, Any]:
    return with_(NORDIC, location=with_(NORDIC["location"], **changes))


# --- the three forms ----------------------------------------------------------------------------


def test_seed_document() -> None:
    job = parse_document(SEED)
    assert job == FirmwareJob(
        url=URL, source="seed", size=181124, md5=bytes.fromhex(H32), presigned=False
    )
    assert (job.sha256, job.version, job.image, job.signed) == (None, None, 0, None)


@pytest.mark.parametrize("idx", [0, 1, None, ...])
def test_seed_bc_idx_0_or_1_both_mean_image_0_secondary_slot(idx: object) -> None:
    job = parse_document(with_(SEED, bc_idx=idx))
    assert isinstance(job, FirmwareJob) and job.image == 0


def test_nordic_document() -> None:
    job = parse_document(NORDIC)
    assert job == FirmwareJob(
        url="https://fw-bucket.amazonaws.com/app.bin",
        source="nordic",
        size=181124,
        version="1.0.2",
    )


@pytest.mark.parametrize(
    ("loc", "url"),
    [
        ({"protocol": "https", "host": "h.example", "path": "a.bin"}, "https://h.example/a.bin"),
        (
            {"protocol": "HTTPS:", "host": "h.example", "path": "/d/a.bin"},
            "https://h.example/d/a.bin",
        ),
        ({"host": "h.example:8443", "path": "a.bin"}, "https://h.example:8443/a.bin"),
        ({"url": "${aws:iot:s3-presigned-url:https://h.example/a.bin}"}, "https://h.example/a.bin"),
    ],
)
def test_nordic_location_variants(loc: dict[str, str], url: str) -> None:
    job = parse_document(with_(NORDIC, location=loc))
    assert isinstance(job, FirmwareJob) and job.url == url


def test_nordic_size_and_version_are_optional() -> None:
    job = parse_document(with_(NORDIC, size=..., fwversion=...))
    assert isinstance(job, FirmwareJob) and (job.size, job.version) == (None, None)


def test_native_document() -> None:
    job = parse_document(NATIVE)
    assert job == FirmwareJob(
        url=URL,
        source="native",
        size=181124,
        sha256=bytes.fromhex(H64),
        md5=bytes.fromhex(H32),
        version="1.2.3+4",
        image=1,
        signed=True,
    )


def test_native_minimal_without_operation_and_with_nulls() -> None:
    doc = {"url": URL, "md5": H32.upper(), "size": None, "version": None, "signed": None}
    job = parse_document(doc)
    assert job == FirmwareJob(url=URL, source="native", md5=bytes.fromhex(H32))


def test_unknown_fields_are_tolerated() -> None:
    extra = {"comment": "rollout 7", "x": [1, {"y": None}], "afr_ota": {}}
    for doc in (SEED, NORDIC, NATIVE):
        assert parse_document({**doc, **extra}) == parse_document(doc)


@pytest.mark.parametrize(
    ("doc", "operation"),
    [
        ({"operation": "reboot"}, "reboot"),
        ({"operation": "install", "url": URL, "bc_url": 5}, "install"),  # no check of others' jobs
        ({}, None),
        ({"command": "blink", "times": 3}, None),
    ],
)
def test_other_jobs_go_to_the_handler(doc: dict[str, Any], operation: str | None) -> None:
    assert parse_document(doc) == OtherJob(operation, doc)


@pytest.mark.parametrize(
    ("version", "normalised"),
    [
        ("1.2.3", "1.2.3"),
        ("v0.0.1", "0.0.1"),
        ("V255.255.65535+4294967295", "255.255.65535+4294967295"),
        ("01.2.3+0", "1.2.3+0"),
    ],
)
def test_versions_are_normalised(version: str, normalised: str) -> None:
    job = parse_document(with_(NATIVE, version=version))
    assert isinstance(job, FirmwareJob) and job.version == normalised


# --- the presigned URL placeholder -------------------------------------------------------------


@pytest.mark.parametrize("variant", ["s3-presigned-url", "s3-presigned-url-v2"])
def test_unexpanded_placeholder_gives_the_inner_url(variant: str) -> None:
    doc = with_(NATIVE, url=f"${{aws:iot:{variant}:{URL}}}")
    job = parse_document(doc)
    assert isinstance(job, FirmwareJob) and job.url == URL and job.presigned


def test_placeholder_in_the_seed_form() -> None:
    job = parse_document(with_(SEED, bc_url=f" ${{aws:iot:s3-presigned-url:{URL}}} "))
    assert isinstance(job, FirmwareJob) and (job.url, job.presigned) == (URL, True)


def test_expanded_presigned_url_is_recognised_and_never_shown() -> None:
    job = parse_document(with_(NATIVE, url=PRESIGNED))
    assert isinstance(job, FirmwareJob) and job.url == PRESIGNED and job.presigned
    assert SECRET not in repr(job) and URL in repr(job)
    assert not parse_document(NATIVE).presigned  # type: ignore[union-attr]


def test_presigned_detection() -> None:
    assert is_presigned(PRESIGNED)
    assert is_presigned(f"{URL}?AWSAccessKeyId=AKIA&Expires=1700000000&Signature=abc")
    assert not is_presigned(URL) and not is_presigned(f"{URL}?version=3")


def test_presigned_expiry() -> None:
    assert presigned_expiry(PRESIGNED) == 1704067200 + 3600
    assert presigned_expiry(f"{URL}?AWSAccessKeyId=A&Expires=1700000000&Signature=s") == 1.7e9
    assert presigned_expiry(URL) is None
    assert presigned_expiry(f"{URL}?X-Amz-Date=yesterday&X-Amz-Expires=60") is None


# --- URL policy ---------------------------------------------------------------------------------


def test_plain_http_only_when_allowed() -> None:
    doc = with_(NATIVE, url="http://10.0.0.2:8000/fw.bin")
    with pytest.raises(DocumentError, match="plain http is allowed only with allow_http"):
        parse_document(doc)
    job = parse_document(doc, allow_http=True)
    assert isinstance(job, FirmwareJob) and job.url == "http://10.0.0.2:8000/fw.bin"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("fw-bucket.s3.eu-west-1.amazonaws.com", True),
        ("FW-Bucket.S3.amazonaws.com.", True),
        ("amazonaws.com", False),  # "*.x" needs a name below x
        ("evilamazonaws.com", False),
        ("amazonaws.com.evil.net", False),
        ("firmware.example.net", True),
        ("cdn.firmware.example.net", False),
    ],
)
def test_host_allowlist(host: str, allowed: bool) -> None:
    patterns = ["*.amazonaws.com", "firmware.example.net"]
    assert host_allowed(host, patterns) is allowed
    doc = with_(NATIVE, url=f"https://{host}/fw.bin")
    if allowed:
        assert isinstance(parse_document(doc, allowed_hosts=patterns), FirmwareJob)
    else:
        with pytest.raises(DocumentError, match=r"url host '.*' is not in allowed_hosts \(\*\.ama"):
            parse_document(doc, allowed_hosts=patterns)


def test_allowlist_given_as_one_string() -> None:
    assert host_allowed("a.amazonaws.com", "*.amazonaws.com")


def test_url_problem_is_none_for_good_urls() -> None:
    assert url_problem(URL) is None and url_problem(PRESIGNED) is None
    assert url_problem("https://[::1]:8443/fw.bin") is None


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


# --- redaction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (PRESIGNED, URL),
        ("https://user:pw@h.example:8443/a/b?x=1#frag", "https://h.example:8443/a/b"),
        ("https://h.example", "https://h.example"),
        ("https://[::1/fw.bin?sig=1", "https://[::1/fw.bin"),
        ("not a url?token=1", "not a url"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text() -> None:
    text = f"GET /app.bin?X-Amz-Signature={SECRET} failed for {PRESIGNED}: 'reset'"
    assert redact_text(text) == f"GET /app.bin failed for {URL}: 'reset'"


# --- properties ---------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "operation",
    "url",
    "size",
    "sha256",
    "md5",
    "version",
    "image",
    "signed",
    "bc_idx",
    "bc_crc",
    "bc_size",
    "bc_url",
    "location",
    "fwversion",
]
plausible = st.sampled_from(
    [
        URL,
        PRESIGNED,
        "http://h/x",
        f"${{aws:iot:s3-presigned-url:{URL}}}",
        "${aws:iot:x}",
        H64,
        H32,
        "1.2.3",
        "v1.2.3+4",
        "fota",
        "app_fw_update",
        "reboot",
        0,
        1,
        2,
        -1,
        2**32,
        2**32 + 1,
        True,
        None,
        "",
        "https:",
        "h.example",
        "/p.bin",
    ]
)
locations = st.dictionaries(
    st.sampled_from(["protocol", "host", "path", "url"]), plausible | json_values, max_size=4
)
documents = st.dictionaries(
    st.sampled_from(FIELDS), plausible | locations | json_values, max_size=8
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(json_values, documents),
    st.booleans(),
    st.sampled_from([None, ["*.amazonaws.com"], []]),
)
def test_only_document_errors_escape(
    doc: object, allow_http: bool, allowed_hosts: list[str] | None
) -> None:
    try:
        result = parse_document(doc, allow_http=allow_http, allowed_hosts=allowed_hosts)
    except DocumentError as exc:
        assert exc.reason and "\n" not in exc.reason and len(exc.reason) < 300
        assert SECRET not in exc.reason
    else:
        assert isinstance(result, (FirmwareJob, OtherJob))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_only_document_errors_escape_from_text(text: str | bytes) -> None:
    with contextlib.suppress(DocumentError):
        parse_document_text(text)


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 2**32),
    data=st.binary(max_size=64),
    version=st.tuples(
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 65535),
        st.none() | st.integers(0, 2**32 - 1),
    ),
    image=st.integers(0, 255),
    signed=st.none() | st.booleans(),
    v=st.sampled_from(["", "v"]),
)
def test_valid_native_documents_round_trip(
    size: int,
    data: bytes,
    version: tuple[int, int, int, int | None],
    image: int,
    signed: bool | None,
    v: str,
) -> None:
    text = ".".join(map(str, version[:3])) + ("" if version[3] is None else f"+{version[3]}")
    digest = hashlib.sha256(data).digest()
    job = parse_document(
        {
            "url": URL,
            "size": size,
            "sha256": digest.hex(),
            "version": v + text,
            "image": image,
            "signed": signed,
        }
    )
    assert job == FirmwareJob(
        url=URL, source="native", size=size, sha256=digest, version=text, image=image, signed=signed
    )
