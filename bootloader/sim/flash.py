"""NOR flash model: the semantics MCUboot's simulator enforces, with power-cut injection.

- erase works on whole sectors and sets them to the erased value;
- a write must be aligned to the write block, cover whole write blocks and land on
  erased bytes only (no rewrite without erase);
- every write and erase is counted; ``power_cut_at = N`` makes operation number N
  (1-based, counted from when it was set) raise :class:`PowerCut` before touching flash,
  exactly like the countdown in MCUboot's ``sim/`` harness.

A flash may be backed by a file (memory-mapped), so a restarted process sees the same
contents; a missing file is created erased.
"""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path
from typing import Final

from bootloader.formats.layout import Layout, Partition
from fota_common.errors import FlashError as FlashError  # re-exported


class PowerCut(Exception):
    """Power was lost before a flash operation; the operation did not happen."""

    def __init__(self, op_index: int) -> None:
        super().__init__(f"power cut before flash operation {op_index}")
        self.op_index = op_index


class Flash:
    """A whole flash device (sector-uniform), optionally file-backed."""

    def __init__(
        self,
        size: int,
        sector_size: int,
        write_size: int,
        erased_val: int = 0xFF,
        path: str | Path | None = None,
    ) -> None:
        if size % sector_size:
            raise FlashError(f"flash size {size:#x} is not a multiple of {sector_size:#x}")
        self.size: Final = size
        self.sector_size: Final = sector_size
        self.write_size: Final = write_size
        self.erased_val: Final = erased_val
        self.ops = 0
        self.writes = 0
        self.erases = 0
        self.power_cut_at: int | None = None
        self._ops_at_arm = 0
        self._file: int | None = None
        self._mm: mmap.mmap | bytearray
        if path is None:
            self._mm = bytearray([erased_val]) * size
        else:
            self._mm = self._open(Path(path))

    @classmethod
    def for_layout(cls, layout: Layout, path: str | Path | None = None) -> Flash:
        return cls(
            layout.flash_size, layout.sector_size, layout.write_size, layout.erased_val, path
        )

    def _open(self, path: Path) -> mmap.mmap:
        exists = path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise FlashError(
                f"cannot open flash file {path}: {exc.strerror}: give a writable file path"
            ) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FlashError(
                    f"flash file {path} is not a regular file: give a file path (it is created)"
                )
            cur = st.st_size
            if exists and cur not in (0, self.size):
                raise FlashError(
                    f"flash file {path} holds {cur} bytes but the board's flash is {self.size}"
                    " bytes: use a new file or the matching --board"
                )
            if cur == 0:
                chunk = bytes([self.erased_val]) * min(self.size, 1 << 20)
                left = self.size
                while left:
                    n = min(left, len(chunk))
                    os.write(fd, chunk[:n])
                    left -= n
            mm = mmap.mmap(fd, self.size)
        except OSError as exc:
            os.close(fd)
            raise FlashError(f"cannot use flash file {path}: {exc.strerror}") from exc
        except BaseException:
            os.close(fd)
            raise
        self._file = fd
        return mm

    def close(self) -> None:
        if isinstance(self._mm, mmap.mmap):
            self._mm.flush()
            self._mm.close()
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def __enter__(self) -> Flash:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- power cut -------------------------------------------------------------------
    def arm_power_cut(self, n: int | None) -> None:
        """Cut power before the n-th operation from now (1-based); None disarms."""
        self.power_cut_at = n
        self._ops_at_arm = self.ops

    def _count(self) -> None:
        if self.power_cut_at is not None and self.ops - self._ops_at_arm + 1 >= self.power_cut_at:
            index = self.ops - self._ops_at_arm + 1
            self.power_cut_at = None
            raise PowerCut(index)
        self.ops += 1

    # -- NOR operations --------------------------------------------------------------
    def read(self, off: int, n: int) -> bytes:
        if off < 0 or n < 0 or off + n > self.size:
            raise FlashError(f"read {off:#x}+{n:#x} is outside the flash")
        return bytes(self._mm[off : off + n])

    def erase(self, off: int, n: int) -> None:
        if off % self.sector_size or n % self.sector_size or n == 0:
            raise FlashError(f"erase {off:#x}+{n:#x} is not sector-aligned ({self.sector_size:#x})")
        if off < 0 or off + n > self.size:
            raise FlashError(f"erase {off:#x}+{n:#x} is outside the flash")
        for s in range(off, off + n, self.sector_size):
            self._count()
            self.erases += 1
            self._mm[s : s + self.sector_size] = bytes([self.erased_val]) * self.sector_size

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if off % self.write_size or n % self.write_size or n == 0:
            raise FlashError(
                f"write {off:#x}+{n:#x} is not aligned to the {self.write_size}-byte write block"
            )
        if off < 0 or off + n > self.size:
            raise FlashError(f"write {off:#x}+{n:#x} is outside the flash")
        current = self._mm[off : off + n]
        if current.count(self.erased_val) != n:
            bad = next(i for i, b in enumerate(current) if b != self.erased_val)
            raise FlashError(
                f"write to {off + bad:#x}: flash not erased (no rewrite without erase)"
            )
        self._count()
        self.writes += 1
        self._mm[off : off + n] = bytes(data)

    def snapshot(self) -> bytes:
        """The whole contents, for tests that replay from a known state."""
        return bytes(self._mm)

    def restore(self, data: bytes) -> None:
        if len(data) != self.size:
            raise FlashError(f"snapshot holds {len(data)} bytes, flash is {self.size}")
        self._mm[:] = data

    def area(self, part: Partition) -> FlashArea:
        return FlashArea(self, part.offset, part.size, part.name)


class FlashArea:
    """A window on a flash (a partition), with offsets relative to its start.

    This is the flash-area interface the MCU code (``mcu/``) expects: ``size``,
    ``sector_size``, ``write_size``, ``erased_val``, ``read``, ``write``, ``erase``.
    """

    def __init__(self, flash: Flash, offset: int, size: int, name: str = "") -> None:
        self.flash = flash
        self.offset = offset
        self.size = size
        self.name = name
        self.sector_size = flash.sector_size
        self.write_size = flash.write_size
        self.erased_val = flash.erased_val

    def _check(self, off: int, n: int, what: str) -> None:
        if off < 0 or n < 0 or off + n > self.size:
            raise FlashError(f"{what} {off:#x}+{n:#x} is outside area {self.name} ({self.size:#x})")

    def read(self, off: int, n: int) -> bytes:
        self._check(off, n, "read")
        return self.flash.read(self.offset + off, n)

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        self._check(off, len(data), "write")
        self.flash.write(self.offset + off, data)

    def erase(self, off: int, n: int) -> None:
        self._check(off, n, "erase")
        self.flash.erase(self.offset + off, n)

    def sector_count(self) -> int:
        return self.size // self.sector_size
