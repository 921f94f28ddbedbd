"""What the job document tests share: a URL and its presigned form, hashes, one document of
each form (the seed's, Nordic's, ours), and :func:`with_` to change a document's fields.
"""

from __future__ import annotations

from typing import Any

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
