"""Image files on disk: checking an image against its job document, hashing a file, and
copying or renaming one durably (fsynced, never half-written).

Shared by the transfer (:mod:`host_bridge.image.download`) and the download cache
(:mod:`host_bridge.image.cache`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Final

from fota_common.errors import DownloadError
from host_bridge.jobs.documents import FirmwareJob

__all__ = ["CHUNK_SIZE", "atomic_copy", "fsync_dir", "hash_file", "verify_against_job"]

CHUNK_SIZE: Final = 64 * 1024


def verify_against_job(job: FirmwareJob, size: int, sha256: bytes, md5: bytes) -> None:
    """Raise DownloadError unless the image matches the size and hashes the job names."""
    if job.size is not None and size != job.size:
        raise DownloadError(f"the download is {size} bytes but the job document says {job.size}")
    if job.sha256 is not None and sha256 != job.sha256:
        raise DownloadError(
            f"SHA-256 mismatch: the download is {sha256.hex()}, "
            f"the job document says {job.sha256.hex()}"
        )
    if job.md5 is not None and md5 != job.md5:
        raise DownloadError(
            f"MD5 mismatch: the download is {md5.hex()}, the job document says {job.md5.hex()}"
        )


def hash_file(path: Path) -> tuple[int, bytes, bytes]:
    """(size, SHA-256, MD5) of the file, read in CHUNK_SIZE pieces."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with path.open("rb") as f:
        while piece := f.read(CHUNK_SIZE):
            sha256.update(piece)
            md5.update(piece)
            size += len(piece)
    return size, sha256.digest(), md5.digest()


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy to a temporary file beside ``dst`` (mode 0600), fsync it, rename it over ``dst``."""
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            while piece := inp.read(CHUNK_SIZE):
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dst.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename durable; not every platform can open a directory, which is fine."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
