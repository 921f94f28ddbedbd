"""The layouts the Zephyr/MCUboot configuration is built from: the two Zephyr-derived boards
follow upstream, and broken layouts are refused with a reason that names the problem."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bootloader.formats.layout import LayoutError, load_board, parse_layout

# --- Upstream facts the two Zephyr-derived layouts rest on -----------------------------------


def test_native_sim_layout_follows_upstream() -> None:
    # zephyr boards/native/native_sim/native_sim.dts
    lay = load_board("native_sim")
    assert (lay.flash_size, lay.sector_size, lay.write_size, lay.erased_val) == (
        0x200000,
        4096,
        1,
        0xFF,
    )
    assert (lay.partitions["boot"].offset, lay.partitions["boot"].size) == (0x0, 0xC000)
    assert lay.slot0.offset == 0xC000
    assert lay.slot1.size == 0x69000
    assert (lay.partitions["storage"].offset, lay.partitions["storage"].size) == (0xFC000, 0x4000)
    assert lay.slot0.size == lay.slot1.size + lay.sector_size


def test_nrf52840_layout_follows_upstream() -> None:
    # zephyr dts/arm/nordic/nrf52840.dtsi, nrf52840_qiaa.dtsi, nrf52840_partition.dtsi
    lay = load_board("nrf52840")
    assert (lay.flash_size, lay.sector_size, lay.write_size, lay.erased_val) == (
        0x100000,
        4096,
        4,
        0xFF,
    )
    assert (lay.partitions["boot"].offset, lay.partitions["boot"].size) == (0x0, 0xC000)
    assert lay.slot0.offset == 0xC000
    assert lay.slot1.size == 0x76000
    assert lay.slot0.size == lay.slot1.size + lay.sector_size
    assert lay.partitions["storage"].end == lay.flash_size


# --- Layouts that must be refused ----------------------------------------------------------

GOOD: dict[str, Any] = {
    "name": "bad",
    "flash": {"size": 0x4000, "sector_size": 0x200, "write_block_size": 8, "erased_value": 0xFF},
    "mcuboot": {"mode": "swap-move", "max_align": 8, "max_sectors": 16, "header_size": 0x20},
    "partitions": {
        "boot": {"offset": 0x0, "size": 0x800},
        "slot0": {"offset": 0x800, "size": 0x1400},
        "slot1": {"offset": 0x1C00, "size": 0x1200},
    },
}


def variant(**changes: Any) -> dict[str, Any]:
    """GOOD with changes applied; ``flash__size=1`` sets data["flash"]["size"], None deletes."""
    data = copy.deepcopy(GOOD)
    for dotted, value in changes.items():
        *path, key = dotted.split("__")
        table = data
        for part in path:
            table = table[part]
        if value is None:
            del table[key]
        else:
            table[key] = value
    return data


BAD_LAYOUTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "overlap",
        variant(partitions__slot1={"offset": 0x1A00, "size": 0x1200}),
        "partitions slot0 and slot1 overlap at 0x1a00",
    ),
    (
        "misaligned offset",
        variant(partitions__slot1={"offset": 0x1C10, "size": 0x1200}),
        "partition slot1 (0x1c10+0x1200) is not aligned to the 0x200-byte sector",
    ),
    (
        "misaligned size",
        variant(partitions__boot={"offset": 0x0, "size": 0x7F0}),
        "partition boot (0x0+0x7f0) is not aligned",
    ),
    (
        "slot too small for the trailer",
        # 128 sectors x 3 status entries x 8 bytes: a 3 KiB trailer in 2.5 KiB slots.
        variant(
            mcuboot__max_sectors=128,
            partitions__slot0={"offset": 0x800, "size": 0xA00},
            partitions__slot1={"offset": 0x1200, "size": 0x800},
        ),
        "slots too small for the 3120-byte MCUboot trailer",
    ),
    (
        "swap-move slot count",
        variant(
            partitions__slot0={"offset": 0x800, "size": 0x1600},
            partitions__slot1={"offset": 0x1E00, "size": 0x1200},
        ),
        "swap-move needs slot0 to have slot1's sector count plus one (slot0 11, slot1 9)",
    ),
    (
        "slot1 larger than slot0",
        variant(partitions__slot1={"offset": 0x1C00, "size": 0x1600}),
        "swap-move needs slot0 to have slot1's sector count plus one (slot0 10, slot1 11)",
    ),
    (
        "write size not a power of two",
        variant(flash__write_block_size=3),
        "write_block_size 3 must be a power of two <= 32",
    ),
    (
        "write size above max_align",
        variant(flash__write_block_size=16),
        "write_block_size 16 exceeds max_align 8",
    ),
    (
        "write size too large",
        variant(flash__write_block_size=64),
        "write_block_size 64 must be a power of two <= 32",
    ),
    (
        "partition past the end of flash",
        variant(flash__size=0x2000),
        "partition slot1 ends at 0x2e00, past the end of the 0x2000-byte flash",
    ),
    (
        "more sectors than max_sectors",
        variant(mcuboot__max_sectors=8),
        "a slot has 10 sectors but max_sectors is 8",
    ),
    (
        "missing slot1",
        variant(partitions__slot1=None),
        "missing partition 'slot1'",
    ),
    (
        "sector size not a power of two",
        variant(flash__sector_size=0x300),
        "sector_size 768 is not a power of two",
    ),
    (
        "unknown mode",
        variant(mcuboot__mode="swap-scratch"),
        "unknown MCUboot mode 'swap-scratch'",
    ),
    (
        "bad erased value",
        variant(flash__erased_value=0x55),
        "erased_value must be 0xff or 0x00",
    ),
    (
        "negative offset",
        variant(partitions__slot1={"offset": -0x200, "size": 0x1200}),
        "'offset' must be a non-negative integer",
    ),
    (
        "overwrite-only slot1 larger than slot0",
        variant(
            mcuboot__mode="overwrite-only",
            partitions__slot0={"offset": 0x800, "size": 0x1200},
            partitions__slot1={"offset": 0x1A00, "size": 0x1400},
        ),
        "slot1 (10 sectors) is larger than slot0 (9 sectors)",
    ),
]


def test_the_base_layout_is_valid() -> None:
    layout = parse_layout(copy.deepcopy(GOOD))
    assert layout.max_image_size() > 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [pytest.param(data, reason, id=case) for case, data, reason in BAD_LAYOUTS],
)
def test_bad_layouts_are_refused_with_the_reason(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(LayoutError) as excinfo:
        parse_layout(data)
    message = str(excinfo.value)
    assert message.startswith("board bad"), message
    assert reason in message, message
