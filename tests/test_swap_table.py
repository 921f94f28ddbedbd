"""The swap-type table (boot_swap_tables in bootutil_public.c), row by row."""

from __future__ import annotations

import pytest

from mcu import mcuboot as mb

G, B, U = mb.MAGIC_GOOD, mb.MAGIC_BAD, mb.MAGIC_UNSET
S, X, N = mb.FLAG_SET, mb.FLAG_BAD, mb.FLAG_UNSET


def st(magic: int, image_ok: int, copy_done: int) -> mb.SwapState:
    return mb.SwapState(magic, mb.SWAP_NONE, 0, copy_done, image_ok, None)


# (primary magic/image_ok/copy_done, secondary magic/image_ok/copy_done, expected, why)
CASES = [
    # Row 1: secondary GOOD + image_ok UNSET -> TEST, whatever the primary says.
    ((U, N, N), (G, N, N), mb.SWAP_TEST, "row 1, fresh primary"),
    ((G, S, S), (G, N, N), mb.SWAP_TEST, "row 1, confirmed primary"),
    ((B, X, X), (G, N, S), mb.SWAP_TEST, "row 1, bad primary, secondary copy_done ignored"),
    # Row 2: secondary GOOD + image_ok SET -> PERM.
    ((U, N, N), (G, S, N), mb.SWAP_PERM, "row 2"),
    ((G, N, S), (G, S, N), mb.SWAP_PERM, "row 2 wins over row 3 (order)"),
    # Row 3: primary GOOD, image_ok UNSET, copy_done SET -> REVERT.
    ((G, N, S), (U, N, N), mb.SWAP_REVERT, "row 3"),
    ((G, N, S), (B, N, N), mb.SWAP_REVERT, "row 3, secondary magic ANY"),
    # Secondary GOOD with a BAD image_ok matches neither row 1 nor row 2.
    ((G, N, S), (G, X, N), mb.SWAP_REVERT, "falls through to row 3"),
    ((U, N, N), (G, X, N), mb.SWAP_NONE, "bad secondary image_ok, nothing matches"),
    # No row matches -> NONE.
    ((U, N, N), (U, N, N), mb.SWAP_NONE, "both erased"),
    ((G, S, S), (U, N, N), mb.SWAP_NONE, "confirmed after swap"),
    ((G, N, N), (U, N, N), mb.SWAP_NONE, "primary magic without copy_done"),
    ((G, X, S), (U, N, N), mb.SWAP_NONE, "primary image_ok BAD is not UNSET"),
    ((G, N, X), (U, N, N), mb.SWAP_NONE, "primary copy_done BAD is not SET"),
    ((B, N, S), (U, N, N), mb.SWAP_NONE, "primary magic BAD"),
    ((U, N, N), (B, N, N), mb.SWAP_NONE, "secondary magic BAD"),
]


@pytest.mark.parametrize(("pri", "sec", "expected", "why"), CASES, ids=[c[3] for c in CASES])
def test_swap_type_row(
    pri: tuple[int, int, int], sec: tuple[int, int, int], expected: int, why: str
) -> None:
    assert mb.swap_type_for(st(*pri), st(*sec)) == expected, why


def test_table_is_data_in_upstream_order() -> None:
    results = [row[-1] for row in mb.SWAP_TABLE]
    assert results == [mb.SWAP_TEST, mb.SWAP_PERM, mb.SWAP_REVERT]
