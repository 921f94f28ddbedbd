"""What an upload reads: image bytes in memory, or a file read chunk by chunk."""

from __future__ import annotations

import hashlib
import os

__all__ = ["Image", "ImageFile", "image_sha256"]


class ImageFile:
    """An image read from its file chunk by chunk, so a 16 MiB upload never holds 16 MiB."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._f = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self.size = os.fstat(self._f.fileno()).st_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, s: slice) -> bytes:
        start, stop, _ = s.indices(self.size)
        return os.pread(self._f.fileno(), max(0, stop - start), start)

    def sha256(self) -> bytes:
        h = hashlib.sha256()
        for off in range(0, self.size, 1 << 16):
            h.update(self[off : off + (1 << 16)])
        return h.digest()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ImageFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Image = bytes | ImageFile


def image_sha256(image: Image) -> bytes:
    return image.sha256() if isinstance(image, ImageFile) else hashlib.sha256(image).digest()
