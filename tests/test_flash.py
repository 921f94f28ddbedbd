"""NOR semantics of the flash model, op counting, power cuts and file persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootloader.formats.layout import Partition
from bootloader.sim.flash import Flash, FlashError, PowerCut


def small() -> Flash:
    return Flash(size=4096, sector_size=1024, write_size=8)


def test_new_flash_is_erased() -> None:
    assert small().read(0, 4096) == b"\xff" * 4096


def test_write_then_read_back() -> None:
    f = small()
    f.write(8, b"12345678")
    assert f.read(0, 24) == b"\xff" * 8 + b"12345678" + b"\xff" * 8
    assert (f.ops, f.writes, f.erases) == (1, 1, 0)


@pytest.mark.parametrize(
    ("off", "data", "reason"),
    [
        (4, b"12345678", "not aligned"),
        (0, b"123", "not aligned"),
        (4096, b"12345678", "outside"),
    ],
)
def test_misaligned_or_out_of_range_writes_raise(off: int, data: bytes, reason: str) -> None:
    with pytest.raises(FlashError, match=reason):
        small().write(off, data)


def test_no_rewrite_without_erase() -> None:
    f = small()
    f.write(0, b"\x00" * 8)
    with pytest.raises(FlashError, match="not erased"):
        f.write(0, b"\x00" * 8)
    f.erase(0, 1024)
    f.write(0, b"\x00" * 8)
    assert f.erases == 1


def test_erase_must_be_sector_aligned() -> None:
    with pytest.raises(FlashError, match="sector-aligned"):
        small().erase(512, 1024)


def test_erase_counts_one_op_per_sector() -> None:
    f = small()
    f.erase(0, 4096)
    assert f.ops == 4


def test_power_cut_before_nth_op_leaves_that_op_undone() -> None:
    f = small()
    f.arm_power_cut(2)
    f.write(0, b"A" * 8)
    with pytest.raises(PowerCut) as cut:
        f.write(8, b"B" * 8)
    assert cut.value.op_index == 2
    assert f.read(0, 16) == b"A" * 8 + b"\xff" * 8
    f.write(8, b"B" * 8)  # disarmed after firing
    assert f.ops == 2


def test_file_backed_flash_persists_and_checks_size(tmp_path: Path) -> None:
    path = tmp_path / "flash.bin"
    with Flash(4096, 1024, 8, path=path) as f:
        f.write(16, b"persist!")
    assert path.stat().st_mode & 0o777 == 0o600
    with Flash(4096, 1024, 8, path=path) as f:
        assert f.read(16, 8) == b"persist!"
    with pytest.raises(FlashError, match="holds 4096 bytes"):
        Flash(8192, 1024, 8, path=path)


def test_area_offsets_are_relative_and_bounded() -> None:

    f = small()
    a = f.area(Partition("slot", 1024, 2048))
    a.write(0, b"abcdefgh")
    assert f.read(1024, 8) == b"abcdefgh"
    with pytest.raises(FlashError, match="outside area"):
        a.read(2040, 16)
