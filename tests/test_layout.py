"""Board layouts load, and their derived values match MCUboot's formulas."""

from __future__ import annotations

import pytest

from bootloader.formats.layout import LayoutError, board_names, load_board


def test_required_boards_exist() -> None:
    assert {"nrf52840", "rp2040", "native_sim", "tiny"} <= set(board_names())


@pytest.mark.parametrize("name", board_names())
def test_every_board_is_valid(name: str) -> None:
    lay = load_board(name)
    assert lay.max_image_size() > lay.header_size
    assert lay.slot0.offset % lay.sector_size == 0


def test_nrf52840_trailer_matches_mcuboot_formula() -> None:
    lay = load_board("nrf52840")
    # 128 sectors x 3 status entries x 4-byte writes + 4 x BOOT_MAX_ALIGN + 16 magic
    assert lay.trailer_size() == 128 * 3 * 4 + 4 * 8 + 16
    # app_max_size(): primary less trailer sector and the move sector; secondary less trailer
    assert lay.max_image_size() == min(0x77000 - 0x2000, 0x76000 - 0x1000)


def test_imgtool_args_carry_the_layout() -> None:
    args = load_board("tiny").imgtool_args()
    assert args[args.index("--slot-size") + 1] == hex(0x1200)
    assert args[args.index("--align") + 1] == "8"


def test_unknown_board_names_the_known_ones() -> None:
    with pytest.raises(LayoutError, match=r"unknown board 'nope'.*tiny"):
        load_board("nope")
