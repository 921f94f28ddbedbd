"""Signing raw firmware into MCUboot images with imgtool's own Python API."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from imgtool import image as imgimage
from imgtool import keys
from imgtool.version import decode_version

from bootloader.formats.layout import Layout
from fota_common.errors import ConfigError, ImageError

KEY_TYPES = ("ecdsa-p256", "ed25519", "rsa-2048")


@dataclass(frozen=True)
class SigningParams:
    """What imgtool needs to know about the target slot."""

    header_size: int = 0x200
    align: int = 4
    max_align: int = 8
    slot_size: int = 0
    max_sectors: int = 128
    overwrite_only: bool = False

    @classmethod
    def from_layout(cls, layout: Layout) -> SigningParams:
        return cls(
            header_size=layout.header_size,
            align=layout.write_size,
            max_align=layout.max_align,
            slot_size=layout.slot1.size,
            max_sectors=layout.max_sectors,
            overwrite_only=layout.overwrite_only,
        )


def generate_key(path: str | Path, kind: str = "ecdsa-p256") -> Path:
    """Write a new private signing key (PEM, mode 0600) that imgtool and MCUboot accept."""

    makers: dict[str, Any] = {
        "ecdsa-p256": keys.ECDSA256P1.generate,
        "ed25519": keys.Ed25519.generate,
        "rsa-2048": lambda: keys.RSA.generate(2048),
    }
    if kind not in makers:
        raise ConfigError(f"unknown key type '{kind}' (choose from {', '.join(KEY_TYPES)})")
    target = Path(path)
    if target.exists():
        raise ConfigError(f"{target} already exists: refusing to overwrite a key")
    key = makers[kind]()
    try:
        # Created 0600 before a byte of the key is written; O_EXCL closes the exists() race.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"{target} already exists: refusing to overwrite a key") from exc
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror}") from exc
    os.close(fd)
    try:
        key.export_private(str(target))
        os.chmod(target, 0o600)
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {target}: {exc.strerror}") from exc
    return target


def load_signing_key(path: str | Path) -> Any:

    try:
        key = keys.load(str(path))
    except FileNotFoundError as exc:
        raise ConfigError(f"signing key {path} not found") from exc
    except OSError as exc:  # a directory, unreadable, ...
        raise ConfigError(f"cannot read signing key {path}: {exc.strerror}") from exc
    except (ValueError, TypeError, click.ClickException) as exc:
        raise ConfigError(f"{path} is not a usable signing key: {exc}") from exc
    if key is None:
        raise ConfigError(f"{path} is not a usable signing key")
    return key


def sign_payload(
    payload: bytes, key_path: str | Path | None, version: str, params: SigningParams
) -> bytes:
    """An MCUboot image of ``payload``, signed (or hash-only when ``key_path`` is None)."""

    key = load_signing_key(key_path) if key_path is not None else None
    try:
        ver = decode_version(version)
    except (ValueError, click.ClickException) as exc:
        raise ImageError(f"bad version '{version}': use MAJOR.MINOR.REVISION[+BUILD]") from exc
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "firmware.bin"
        src.write_bytes(payload)
        try:
            img = imgimage.Image(
                version=ver,
                header_size=params.header_size,
                pad_header=True,
                align=params.align,
                slot_size=params.slot_size,
                max_sectors=params.max_sectors,
                max_align=params.max_align,
                overwrite_only=params.overwrite_only,
            )
            with contextlib.redirect_stdout(None):
                img.load(str(src))
                img.create(key, "hash", None)
        except (ValueError, click.ClickException) as exc:
            msg = getattr(exc, "message", None) or str(exc)
            raise ImageError(f"imgtool could not sign the image: {msg}") from exc
        return bytes(img.payload)
