"""Direct mode's device codecs on CPython: mcu.md5 against hashlib, and mcu.fota_doc against
the gateway's job document parser.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fota_common.errors import DocumentError as HostDocumentError
from host_bridge.jobs.documents import FirmwareJob, OtherJob, parse_document
from mcu import fota_doc, md5

# -- codecs ----------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_md5_matches_hashlib(parts: list[bytes]) -> None:
    h = md5.MD5()
    for p in parts:
        h.update(p)
    assert h.hexdigest() == hashlib.md5(b"".join(parts)).hexdigest()


_hex = st.text("0123456789abcdefABCDEF", min_size=30, max_size=66)
_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**33),
    _hex,
    st.sampled_from(
        [
            "https://h.example.com/f.bin",
            "http://h/f",
            "ftp://x",
            "1.2.3",
            "v1.2.3+4",
            "1.2.3+0",
            "${aws:iot:s3-presigned-url:https://s3.example.com/b/k}",
            "1.2",
            "",
        ]
    ),
)
_keys = st.sampled_from(
    [
        "url",
        "size",
        "sha256",
        "md5",
        "version",
        "image",
        "signed",
        "bc_url",
        "bc_crc",
        "bc_size",
        "bc_idx",
        "note",
    ]
)
_docs = st.tuples(
    st.dictionaries(_keys, _value, max_size=8),
    st.sampled_from([None, "fota", "app_fw_update", "reboot", 7]),
).map(lambda t: t[0] if t[1] is None else dict(t[0], operation=t[1]))


@settings(max_examples=400, deadline=None)
@given(_docs)
def test_document_codec_agrees_with_the_gateway(doc: dict[str, Any]) -> None:
    try:
        host = parse_document(doc)
    except HostDocumentError:
        with pytest.raises(fota_doc.DocumentError):
            fota_doc.parse(doc)
        return
    mine = fota_doc.parse(doc)
    if isinstance(host, OtherJob):
        assert mine is None
        return
    assert isinstance(host, FirmwareJob) and mine is not None
    assert mine["url"] == host.url
    assert mine["size"] == host.size
    assert mine["md5"] == (host.md5.hex() if host.md5 else None)
    assert mine["sha256"] == (host.sha256.hex() if host.sha256 else None)
    assert mine["image"] == host.image and mine["signed"] == host.signed
    if host.version is None:
        assert mine["version"] is None
    else:
        assert mine["version"] == fota_doc.parse_version(host.version)
