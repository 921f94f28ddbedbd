"""The download cache: verified images kept by SHA-256, so a job whose image is already here
makes no request.

Each entry is ``<directory>/<sha256 hex>.bin`` (mode 0600, the directory 0700), written by an
atomic copy after the transfer checked it.  A lookup hashes the entry again and evicts it
when it no longer matches the job document (a damaged file, or a job naming other sizes or
hashes), so a bad entry is downloaded afresh rather than used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fota_common.errors import DownloadError
from host_bridge.image.files import atomic_copy, hash_file, verify_against_job
from host_bridge.jobs.documents import FirmwareJob

__all__ = ["CachedImage", "ImageCache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedImage:
    """A cache entry that matched the job it was looked up for."""

    path: Path
    size: int
    sha256: bytes
    md5: bytes


class ImageCache:
    """Verified images in ``directory``, one file per SHA-256."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, sha256: bytes) -> Path:
        return self.directory / f"{sha256.hex()}.bin"

    def lookup(self, job: FirmwareJob) -> CachedImage | None:
        """The entry for ``job.sha256`` if there is one and it matches the job; None otherwise.

        An entry that does not match is removed; one that cannot be read is left alone.
        """
        if job.sha256 is None:
            return None
        cached = self.path(job.sha256)
        try:
            size, sha256, md5 = hash_file(cached)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read cached image %s: %s", cached, exc.strerror)
            return None
        try:
            verify_against_job(job, size, sha256, md5)
        except DownloadError as exc:
            log.warning("dropping cached image %s: %s", cached.name, exc.reason)
            cached.unlink(missing_ok=True)
            return None
        return CachedImage(cached, size, sha256, md5)

    def store(self, image: Path, sha256: bytes) -> None:
        """Keep a copy of the checked ``image`` whose SHA-256 is ``sha256``; OSError on failure."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_copy(image, self.path(sha256))
