"""Job documents, property tests: whatever the document or its text, only a DocumentError
escapes, and every valid native document round-trips.
"""

from __future__ import annotations

import contextlib
import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st
from job_documents_kit import (
    H32,
    H64,
    PRESIGNED,
    SECRET,
    URL,
)

from host_bridge.jobs.documents import (
    DocumentError,
    FirmwareJob,
    OtherJob,
    parse_document,
    parse_document_text,
)

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
