"""The MCUboot model: test, permanent, revert, bad images, and power cuts everywhere."""

from __future__ import annotations

import pytest

from bootloader.formats.layout import Layout, load_board
from bootloader.sim.flash import Flash
from bootloader.sim.model.boot import boot
from bootloader.sim.model.swap_move import SwapMove
from bootloader.sim.powercut import CampaignResult, run_campaign, scenarios
from bootloader.sim.testimages import make_pair, payload, sign
from mcu import mcuboot as mb


def loaded(layout: Layout, v1: bytes, v2: bytes | None) -> Flash:
    f = Flash.for_layout(layout)
    for slot, img in (("slot0", v1), ("slot1", v2)):
        if img is None:
            continue
        a = f.area(layout.partitions[slot])
        a.write(0, img + b"\xff" * (-len(img) % layout.write_size))
    return f


def test_no_update_boots_primary(tiny: Layout, tiny_pair: tuple[bytes, bytes]) -> None:
    f = loaded(tiny, tiny_pair[0], None)
    r = boot(f, tiny)
    assert r.swap_type == "none" and r.flash_ops == 0
    assert r.booted is not None and r.booted.version == "1.0.0" and r.booted.confirmed


def test_test_then_revert_then_stays(tiny: Layout, tiny_pair: tuple[bytes, bytes]) -> None:
    v1, v2 = tiny_pair
    f = loaded(tiny, v1, v2)
    mb.set_pending(f.area(tiny.slot1), False)
    r = boot(f, tiny)
    assert (r.swap_type, r.booted and r.booted.version) == ("test", "2.0.0")
    assert r.booted is not None and not r.booted.confirmed
    r = boot(f, tiny)
    assert (r.swap_type, r.booted and r.booted.version) == ("revert", "1.0.0")
    r = boot(f, tiny)
    assert (r.swap_type, r.booted and r.booted.version) == ("none", "1.0.0")


def test_confirm_keeps_new_image(tiny: Layout, tiny_pair: tuple[bytes, bytes]) -> None:
    v1, v2 = tiny_pair
    f = loaded(tiny, v1, v2)
    mb.set_pending(f.area(tiny.slot1), False)
    boot(f, tiny)
    mb.set_confirmed(f.area(tiny.slot0))
    for _ in range(2):
        r = boot(f, tiny)
        assert (r.swap_type, r.booted and r.booted.version) == ("none", "2.0.0")


def test_corrupt_secondary_is_erased_not_swapped(
    tiny: Layout, tiny_pair: tuple[bytes, bytes]
) -> None:
    v1, v2 = tiny_pair
    bad = bytearray(v2)
    bad[100] ^= 0x01
    f = loaded(tiny, v1, bytes(bad))
    mb.set_pending(f.area(tiny.slot1), False)
    r = boot(f, tiny)
    assert r.swap_type == "none"
    assert r.booted is not None and r.booted.version == "1.0.0"
    assert any("not valid" in line for line in r.log)
    sec = f.area(tiny.slot1)
    assert sec.read(0, sec.size) == b"\xff" * sec.size


def test_erased_primary_panics(tiny: Layout) -> None:
    r = boot(Flash.for_layout(tiny), tiny)
    assert r.booted is None and r.panic and "primary" in r.panic


def test_too_large_swap_is_refused(tiny: Layout) -> None:

    v1 = sign(payload(500, "a"), "1.0.0", tiny)
    big = sign(payload(tiny.max_image_size() - 200, "b"), "2.0.0", tiny)
    f = loaded(tiny, v1, big)
    mb.set_pending(f.area(tiny.slot1), False)
    r = boot(f, tiny)
    assert r.booted is not None  # a valid image still boots


@pytest.fixture(scope="module")
def campaigns(tiny: Layout, tiny_pair: tuple[bytes, bytes]) -> dict[str, object]:
    return {sc.name: run_campaign(sc) for sc in scenarios(*tiny_pair)}


@pytest.mark.parametrize(
    "name",
    [
        "test swap",
        "permanent swap",
        "revert",
        "boot_set_pending (test)",
        "boot_set_pending (permanent)",
        "boot_set_confirmed",
        "overwrite-only upgrade",
    ],
)
def test_power_cut_at_every_operation(campaigns: dict[str, object], name: str) -> None:

    r = campaigns[name]
    assert isinstance(r, CampaignResult)
    assert r.cut_points == r.clean_ops > 0
    assert r.failures == []


def test_campaign_detects_a_broken_model(tiny_pair: tuple[bytes, bytes]) -> None:
    """The invariants are not vacuous: a model that forgets its status fails them."""

    original = SwapMove.write_status
    try:
        SwapMove.write_status = lambda self, ctx, bs: None  # type: ignore[method-assign]
        r = run_campaign(scenarios(*tiny_pair)[0])
    finally:
        SwapMove.write_status = original  # type: ignore[method-assign]
    assert r.failures


@pytest.mark.parametrize("board", ["nrf52840", "native_sim", "rp2040"])
def test_real_board_layouts_swap_and_revert(board: str) -> None:
    lay = load_board(board)
    v1, v2 = make_pair(lay, size=3 * lay.sector_size + 100)
    f = loaded(lay, v1, v2)
    mb.set_pending(f.area(lay.slot1), False)
    assert boot(f, lay).booted.version == "2.0.0"  # type: ignore[union-attr]
    assert boot(f, lay).booted.version == "1.0.0"  # type: ignore[union-attr]
