"""Make sure an image is one the device will accept, before a byte of it is sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootloader.formats.image import ImageError as CodecError
from bootloader.formats.image import parse_image
from bootloader.formats.keys import load_public_key
from bootloader.formats.verify import verify_image
from fota_common.errors import ConfigError, ImageError
from host_bridge.image.sign import SigningParams, sign_payload

IMAGE_MAGIC = b"\x3d\xb8\xf3\x96"


@dataclass(frozen=True)
class PreparedImage:
    data: bytes
    version: str
    hash: bytes  # the SHA-256 TLV: what the device reports in its image state
    signed_here: bool

    @property
    def size(self) -> int:
        return len(self.data)


def is_mcuboot_image(data: bytes) -> bool:
    return data[:4] == IMAGE_MAGIC


def load_trusted_keys(paths: Sequence[str | Path]) -> list[Any]:
    keys = []
    for p in paths:
        try:
            keys.append(load_public_key(Path(p).read_bytes()))
        except OSError as exc:
            raise ConfigError(f"cannot read trusted key {p}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigError(f"{p} is not a usable public key: {exc}") from exc
    return keys


def prepare(
    data: bytes,
    *,
    trusted_keys: Sequence[Any] = (),
    signing_key: str | Path | None = None,
    version: str | None = None,
    params: SigningParams | None = None,
    max_image_size: int | None = None,
) -> PreparedImage:
    """Verify an MCUboot image, or sign a raw binary; refuse anything the slot cannot hold."""
    signed_here = False
    if not is_mcuboot_image(data):
        if version is None:
            raise ImageError(
                "not an MCUboot image: give --version (and --key) to sign this raw binary"
            )
        data = sign_payload(data, signing_key, version, params or SigningParams())
        signed_here = True
    try:
        image = parse_image(data)
    except CodecError as exc:
        raise ImageError(f"not a valid MCUboot image: {exc}") from exc
    result = verify_image(image, trusted_keys)
    if not result.ok:
        raise ImageError(f"image refused before upload: {result.reason}")
    if max_image_size is not None and image.total_size > max_image_size:
        raise ImageError(
            f"image is {image.total_size} bytes but the slot holds at most {max_image_size} bytes"
        )
    hash_tlv = image.hash_tlv()
    digest = image.sha256_tlv or (hash_tlv.value if hash_tlv is not None else b"")
    return PreparedImage(
        bytes(data[: image.total_size]), str(image.version), bytes(digest), signed_here
    )
