"""Job documents: decode and check what a job asks for, before anything is fetched.

A pure codec: a parsed JSON value in, a :class:`FirmwareJob` or an :class:`OtherJob` out, or a
:class:`DocumentError` whose one-line reason becomes the REJECTED job's ``statusDetails.reason``.

Our own form (``source="native"``)::

    {"operation": "fota", "url": "https://...", "size": 181124,
     "sha256": "<64 hex>", "version": "1.2.3+4", "image": 0, "signed": true}

==============  =====================================  ==========  ===============================
field           type                                   required    meaning
==============  =====================================  ==========  ===============================
``operation``   ``"fota"``                             no          marks the document as ours
``url``         string: ``https://...``, or            yes         where the image is; the query
                ``${aws:iot:s3-presigned-url:...}``                string of a presigned URL is a
                                                                   credential and is never logged
``size``        integer 1..2**32                       no          exact byte count of the file
``sha256``      64 hex digits                          one of the  SHA-256 of the file; also the
                                                       two hashes  download cache key
``md5``         32 hex digits                          one of the  MD5 of the file
                                                       two hashes
``version``     ``MAJOR.MINOR.REVISION[+BUILD]``,      no          version of the new firmware; a
                optional leading ``v``                             raw binary is signed with it
``image``       integer 0..255                         no (0)      MCUboot image number
``signed``      boolean                                no (detect) true: already an MCUboot image;
                                                                   false: a raw binary to sign
==============  =====================================  ==========  ===============================

``null`` counts as absent for the optional fields; other fields are ignored, so a document can
carry notes for people or other tools.

The two other forms seen in the field:

- the seed's (Zerynth aws_iot_fota), ``source="seed"``: ``{"bc_idx": 0|1, "bc_crc": "<md5 hex>",
  "bc_size": int, "bc_url": "https://..."}``. ``bc_url``, ``bc_crc`` and ``bc_size`` are required.
  ``bc_idx`` named the slot to write on the seed's devices; MCUboot always receives a new image
  into the secondary slot of image 0 and swaps it in, so both 0 and 1 mean exactly that, it may
  be absent, and any other value is refused.
- Nordic aws_fota's, ``source="nordic"``: ``{"operation": "app_fw_update", "fwversion":
  "v1.0.2", "size": 181124, "location": {"protocol": "https:", "host": "<bucket>.amazonaws.com",
  "path": "<file>.bin"}}``. The URL is ``protocol//host/path``; ``protocol`` may be written with
  or without its colon and defaults to https; ``location.url`` (a whole URL, e.g. the presigned
  placeholder) may stand instead of protocol/host/path. ``size`` and ``fwversion`` are optional.
  There is no hash: the MCUboot signature check is what protects these images.

Which form: an ``operation`` other than ``fota`` and ``app_fw_update`` is not a firmware job and
becomes an :class:`OtherJob` for the configured handler, whatever its other fields. Without an
``operation`` the fields decide: ``bc_*`` is the seed's, ``location`` Nordic's, ``url`` ours; a
document with none of them is an :class:`OtherJob` with ``operation=None``, and one that mixes
them is refused.

AWS replaces ``${aws:iot:s3-presigned-url:https://...}`` with a presigned URL when it sends the
document. Where it was not replaced (a local run without AWS) the inner URL is used. Either way
:attr:`FirmwareJob.presigned` records that the URL is a short-lived credential.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from fota_common.errors import DocumentError
from host_bridge.redact import redact_text, redact_url
from host_bridge.urls import is_presigned, url_problem

__all__ = [
    "FIRMWARE_OPERATIONS",
    "MAX_DOCUMENT_CHARS",
    "MAX_IMAGE_SIZE",
    "DocumentError",
    "FirmwareJob",
    "OtherJob",
    "Source",
    "parse_document",
    "parse_document_text",
]

Source = Literal["seed", "nordic", "native"]

MAX_DOCUMENT_CHARS: Final = 32_768  # the AWS IoT Jobs limit on a job document
MAX_IMAGE_SIZE: Final = 2**32  # an MCUboot image size is a 32-bit field
MAX_IMAGE_NUMBER: Final = 255
FIRMWARE_OPERATIONS: Final = frozenset({"fota", "app_fw_update"})
SEED_FIELDS: Final = ("bc_url", "bc_crc", "bc_size", "bc_idx")

_PLACEHOLDER: Final = re.compile(r"\$\{aws:iot:s3-presigned-url(?:-v2)?:(?P<url>[^{}]*)\}")
_VERSION: Final = re.compile(
    r"[vV]?(?P<major>[0-9]{1,5})\.(?P<minor>[0-9]{1,5})\.(?P<revision>[0-9]{1,7})"
    r"(?:\+(?P<build>[0-9]{1,12}))?"
)
_VERSION_FORMAT: Final = "MAJOR.MINOR.REVISION[+BUILD] (e.g. 1.2.3 or v1.2.3+4)"


# Query parameters that make a URL a presigned one (SigV4, and the older SigV2 form).
@dataclass(frozen=True, kw_only=True, repr=False)
class FirmwareJob:
    """A firmware update the bridge can carry out."""

    url: str
    source: Source
    size: int | None = None
    sha256: bytes | None = None
    md5: bytes | None = None
    version: str | None = None  # normalised: no leading "v"
    image: int = 0
    signed: bool | None = None  # None: decide by looking at the file
    presigned: bool = False  # the URL is a short-lived credential (refresh it when it expires)

    def __repr__(self) -> str:  # the URL may be a credential: repr() must be safe to log
        return (
            f"FirmwareJob(url={redact_url(self.url)!r}, source={self.source!r}, size={self.size}, "
            f"sha256={self.sha256.hex() if self.sha256 else None}, "
            f"md5={self.md5.hex() if self.md5 else None}, version={self.version!r}, "
            f"image={self.image}, signed={self.signed}, presigned={self.presigned})"
        )


@dataclass(frozen=True)
class OtherJob:
    """A job that is not a firmware update: it goes to the configured job handler."""

    operation: str | None
    document: dict[str, Any] = field(repr=False)


def parse_document_text(
    text: str | bytes,
    *,
    allow_http: bool = False,
    allowed_hosts: Sequence[str] | None = None,
) -> FirmwareJob | OtherJob:
    """Decode a job document from its JSON text; see :func:`parse_document`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DocumentError(f"job document is not UTF-8 (byte {exc.start})") from None
    _check_length(len(text))
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"job document is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError):
        raise DocumentError("job document is not valid JSON") from None
    return parse_document(
        document, raw_length=len(text), allow_http=allow_http, allowed_hosts=allowed_hosts
    )


def parse_document(
    document: object,
    *,
    raw_length: int | None = None,
    allow_http: bool = False,
    allowed_hosts: Sequence[str] | None = None,
) -> FirmwareJob | OtherJob:
    """Decode a parsed job document.

    ``raw_length`` is the document's length in characters as AWS counts it (the raw text);
    without it the length of the compact JSON encoding is used. ``allow_http`` lets plain
    http:// URLs through; ``allowed_hosts`` (exact names, or ``*.suffix`` patterns) limits where
    images may come from. Raises :class:`DocumentError` with a one-line reason.
    """
    _check_length(_json_length(document) if raw_length is None else raw_length)
    if not isinstance(document, dict):
        raise DocumentError(f"job document must be a JSON object, got {_show(document)}")
    operation = document.get("operation")
    if operation is not None and not isinstance(operation, str):
        raise DocumentError(f"operation must be a string, got {_show(operation)}")
    if operation is not None and operation not in FIRMWARE_OPERATIONS:
        return OtherJob(operation, dict(document))
    urls = _UrlPolicy(allow_http, allowed_hosts)
    if operation == "app_fw_update":
        return _nordic(document, urls)
    if operation == "fota":
        return _native(document, urls)
    forms = [
        form
        for form, present in (
            ("seed (bc_*)", any(key in document for key in SEED_FIELDS)),
            ("Nordic (location)", "location" in document),
            ("native (url)", "url" in document),
        )
        if present
    ]
    if not forms:
        return OtherJob(None, dict(document))
    if len(forms) > 1:
        raise DocumentError(
            f"job document mixes the {forms[0]} and {forms[1]} forms: give one, "
            "or an operation ('fota' or 'app_fw_update')"
        )
    if "url" in document:
        return _native(document, urls)
    if "location" in document:
        return _nordic(document, urls)
    return _seed(document, urls)


# --- the three forms ------------------------------------------------------------------------


def _seed(doc: Mapping[str, Any], urls: _UrlPolicy) -> FirmwareJob:
    url, presigned = urls.check("bc_url", _required(doc, "bc_url"))
    md5 = _hex(doc, "bc_crc", 32, "an MD5", required=True)
    size = _size(doc, "bc_size", required=True)
    idx = doc.get("bc_idx")
    if idx is not None and (isinstance(idx, bool) or idx not in (0, 1)):
        raise DocumentError(
            f"bc_idx must be 0 or 1 (both mean: write image 0's secondary slot), got {_show(idx)}"
        )
    return FirmwareJob(url=url, source="seed", size=size, md5=md5, presigned=presigned)


def _nordic(doc: Mapping[str, Any], urls: _UrlPolicy) -> FirmwareJob:
    location = _required(doc, "location")
    if not isinstance(location, dict):
        raise DocumentError(
            f"location must be an object with protocol, host and path, got {_show(location)}"
        )
    if location.get("url") is not None:
        url, presigned = urls.check("location.url", location["url"])
    else:
        url, presigned = urls.check("location", _nordic_url(location))
    size = _size(doc, "size", required=False)
    version = _version(doc, "fwversion")
    return FirmwareJob(url=url, source="nordic", size=size, version=version, presigned=presigned)


def _nordic_url(location: Mapping[str, Any]) -> str:
    protocol = location.get("protocol", "https:")
    if not isinstance(protocol, str) or protocol.lower().rstrip(":") not in ("https", "http"):
        raise DocumentError(
            f"location.protocol must be 'https:' (or 'http:' with allow_http), "
            f"got {_show(protocol)}"
        )
    host = _required(location, "host", prefix="location.")
    if not isinstance(host, str) or not host or any(c in host for c in "/?#@ "):
        raise DocumentError(
            f"location.host must be a host name like bucket.s3.amazonaws.com, got {_show(host)}"
        )
    path = _required(location, "path", prefix="location.")
    if not isinstance(path, str) or not path.strip("/"):
        raise DocumentError(f"location.path must be the file's path on the host, got {_show(path)}")
    return f"{protocol.lower().rstrip(':')}://{host}/{path.lstrip('/')}"


def _native(doc: Mapping[str, Any], urls: _UrlPolicy) -> FirmwareJob:
    url, presigned = urls.check("url", _required(doc, "url"))
    sha256 = _hex(doc, "sha256", 64, "a SHA-256", required=False)
    md5 = _hex(doc, "md5", 32, "an MD5", required=False)
    if sha256 is None and md5 is None:
        raise DocumentError(
            "missing field 'sha256' (or 'md5'): the download must be checked against a hash"
        )
    size = _size(doc, "size", required=False)
    version = _version(doc, "version")
    image = doc.get("image")
    if image is None:
        image = 0
    elif (
        isinstance(image, bool) or not isinstance(image, int) or not 0 <= image <= MAX_IMAGE_NUMBER
    ):
        raise DocumentError(
            f"image must be an MCUboot image number 0..{MAX_IMAGE_NUMBER}, got {_show(image)}"
        )
    signed = doc.get("signed")
    if signed is not None and not isinstance(signed, bool):
        raise DocumentError(
            f"signed must be true (an MCUboot image) or false (a raw binary), got {_show(signed)}"
        )
    return FirmwareJob(
        url=url,
        source="native",
        size=size,
        sha256=sha256,
        md5=md5,
        version=version,
        image=image,
        signed=signed,
        presigned=presigned,
    )


# --- fields ---------------------------------------------------------------------------------


def _check_length(length: int) -> None:
    if length > MAX_DOCUMENT_CHARS:
        raise DocumentError(
            f"job document is {length} characters; AWS IoT allows {MAX_DOCUMENT_CHARS}"
        )


def _json_length(document: object) -> int:
    try:
        return len(json.dumps(document, ensure_ascii=False, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError):
        raise DocumentError(
            "job document is not JSON data (numbers, strings, lists, objects)"
        ) from None


def _required(doc: Mapping[str, Any], name: str, *, prefix: str = "") -> Any:
    if name not in doc:
        raise DocumentError(f"missing field '{prefix}{name}'")
    return doc[name]


def _size(doc: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = _required(doc, name) if required else doc.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DocumentError(f"{name} must be a positive integer, got {_show(value)}")
    if value > MAX_IMAGE_SIZE:
        raise DocumentError(f"{name} must be at most {MAX_IMAGE_SIZE} bytes, got {_show(value)}")
    return value


def _hex(
    doc: Mapping[str, Any], name: str, digits: int, what: str, *, required: bool
) -> bytes | None:
    value = _required(doc, name) if required else doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not re.fullmatch(f"[0-9a-fA-F]{{{digits}}}", value):
        raise DocumentError(f"{name} must be {digits} hex digits ({what}), got {_show(value)}")
    return bytes.fromhex(value)


def _version(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    match = _VERSION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise DocumentError(f"{name} must be {_VERSION_FORMAT}, got {_show(value)}")
    major, minor, revision = (int(match[k]) for k in ("major", "minor", "revision"))
    build = None if match["build"] is None else int(match["build"])
    if major > 255 or minor > 255 or revision > 65535 or (build or 0) > 0xFFFF_FFFF:
        raise DocumentError(
            f"{name} {value!r} is outside MCUboot's range "
            "(major and minor 0..255, revision 0..65535, build 0..4294967295)"
        )
    return f"{major}.{minor}.{revision}" + ("" if build is None else f"+{build}")


def _show(value: object) -> str:
    """A short, one-line, credential-free rendering of a JSON value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else f"a {value.bit_length()}-bit integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        text = redact_text(value)
        return repr(text if len(text) <= 60 else text[:57] + "...")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


# --- URLs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _UrlPolicy:
    allow_http: bool
    allowed_hosts: Sequence[str] | None

    def check(self, name: str, value: object) -> tuple[str, bool]:
        """The URL to fetch and whether it is presigned; the placeholder is unwrapped."""
        if not isinstance(value, str):
            raise DocumentError(f"{name} must be a string, got {_show(value)}")
        url = value.strip()
        from_placeholder = False
        if "${" in url:
            match = _PLACEHOLDER.fullmatch(url)
            if match is None:
                raise DocumentError(
                    f"{name} holds a placeholder other than ${{aws:iot:s3-presigned-url:...}}"
                )
            url, from_placeholder = match["url"].strip(), True
        problem = url_problem(url, allow_http=self.allow_http, allowed_hosts=self.allowed_hosts)
        if problem is not None:
            raise DocumentError(f"{name} {problem}")
        return url, from_placeholder or is_presigned(url)
