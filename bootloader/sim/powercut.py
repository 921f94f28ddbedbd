"""Power-cut campaigns in the style of MCUboot's simulator (``sim/src/image.rs``).

Each scenario runs once cleanly to count its flash operations, then once for every
cut point N: replay from the same start, lose power before operation N, reboot to
completion, and check MCUboot's invariants (which image is in each slot, trailer
states, a valid image boots).  ``python -m bootloader.sim.powercut`` prints the table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from bootloader.formats.layout import Layout, load_board
from bootloader.sim.flash import Flash, PowerCut
from bootloader.sim.model.boot import BootResult, boot
from bootloader.sim.testimages import make_pair
from fota_common.cli import OneLineParser, run
from mcu import mcuboot as mb

Action = Callable[[Flash, Layout], None]
Check = Callable[[Flash, Layout, BootResult], list[str]]


@dataclass
class Scenario:
    name: str
    board: str
    setup: Action
    action: Action
    check: Check


@dataclass
class CampaignResult:
    scenario: str
    board: str
    clean_ops: int
    cut_points: int = 0
    failures: list[str] = field(default_factory=list)


def _load(flash: Flash, layout: Layout, slot: str, image: bytes) -> None:
    area = flash.area(layout.partitions[slot])
    area.erase(0, area.size)
    padded = image + bytes([layout.erased_val]) * (-len(image) % layout.write_size)
    area.write(0, padded)


def _slot_bytes(flash: Flash, layout: Layout, slot: str, n: int) -> bytes:
    return flash.area(layout.partitions[slot]).read(0, n)


def _trailer(flash: Flash, layout: Layout, slot: str) -> tuple[int, int, int]:
    st = mb.read_swap_state(flash.area(layout.partitions[slot]), layout.max_align)
    return st.magic, st.image_ok, st.copy_done


def _boot_until_done(flash: Flash, layout: Layout) -> BootResult:
    flash.arm_power_cut(None)
    return boot(flash, layout)


def scenarios(v1: bytes, v2: bytes) -> list[Scenario]:
    """The standard campaigns: images v1 (running) and v2 (the update)."""
    unset = (mb.MAGIC_UNSET, mb.FLAG_UNSET, mb.FLAG_UNSET)

    def base(flash: Flash, layout: Layout) -> None:
        _load(flash, layout, "slot0", v1)
        _load(flash, layout, "slot1", v2)

    def pending(permanent: bool) -> Action:
        def act(flash: Flash, layout: Layout) -> None:
            mb.set_pending(flash.area(layout.slot1), permanent, 0, layout.max_align)

        return act

    def after_test_swap(flash: Flash, layout: Layout) -> None:
        base(flash, layout)
        pending(False)(flash, layout)
        boot(flash, layout)

    def staged(permanent: bool) -> Action:
        def setup(flash: Flash, layout: Layout) -> None:
            base(flash, layout)
            pending(permanent)(flash, layout)

        return setup

    def do_boot(flash: Flash, layout: Layout) -> None:
        boot(flash, layout)

    def swapped(confirmed: bool) -> Check:
        def check(flash: Flash, layout: Layout, res: BootResult) -> list[str]:
            errs = []
            if res.booted is None or _slot_bytes(flash, layout, "slot0", len(v2)) != v2:
                errs.append("primary does not hold the new image")
            if not layout.overwrite_only and _slot_bytes(flash, layout, "slot1", len(v1)) != v1:
                errs.append("secondary does not hold the old image")
            want_ok = mb.FLAG_SET if confirmed else mb.FLAG_UNSET
            want = (mb.MAGIC_GOOD, want_ok, mb.FLAG_SET)
            if not layout.overwrite_only and _trailer(flash, layout, "slot0") != want:
                errs.append(f"primary trailer {_trailer(flash, layout, 'slot0')} != {want}")
            if _trailer(flash, layout, "slot1") != unset:
                errs.append("secondary trailer not erased")
            return errs

        return check

    def reverted(flash: Flash, layout: Layout, res: BootResult) -> list[str]:
        errs = []
        if _slot_bytes(flash, layout, "slot0", len(v1)) != v1:
            errs.append("primary does not hold the old image after revert")
        if _slot_bytes(flash, layout, "slot1", len(v2)) != v2:
            errs.append("secondary does not hold the new image after revert")
        if _trailer(flash, layout, "slot0") != (mb.MAGIC_GOOD, mb.FLAG_SET, mb.FLAG_SET):
            errs.append(f"primary trailer after revert: {_trailer(flash, layout, 'slot0')}")
        again = boot(flash, layout)
        if again.swap_type != "none" or _slot_bytes(flash, layout, "slot0", len(v1)) != v1:
            errs.append("a third boot did not keep the old image")
        return errs

    def pending_then_boot(permanent: bool) -> Check:
        def check(flash: Flash, layout: Layout, res: BootResult) -> list[str]:
            # The cut hit set_pending itself; whatever was written, a valid image boots.
            if res.booted is None:
                return ["no image booted after an interrupted set_pending"]
            running = _slot_bytes(flash, layout, "slot0", len(v2))
            if running != v2 and _slot_bytes(flash, layout, "slot0", len(v1)) != v1:
                return ["primary holds neither image"]
            return []

        return check

    def confirm_then_boot(flash: Flash, layout: Layout, res: BootResult) -> list[str]:
        new = _slot_bytes(flash, layout, "slot0", len(v2)) == v2
        old = _slot_bytes(flash, layout, "slot0", len(v1)) == v1
        if res.booted is None or not (new or old):
            return ["no valid image after an interrupted confirm"]
        if new and res.swap_type != "none":
            return ["confirmed image was swapped again"]
        return []

    def confirm(flash: Flash, layout: Layout) -> None:
        mb.set_confirmed(flash.area(layout.slot0), layout.max_align)

    return [
        Scenario(
            "test swap",
            "tiny",
            staged(False),
            do_boot,
            swapped(False),
        ),
        Scenario(
            "permanent swap",
            "tiny",
            staged(True),
            do_boot,
            swapped(True),
        ),
        Scenario("revert", "tiny", after_test_swap, do_boot, reverted),
        Scenario("boot_set_pending (test)", "tiny", base, pending(False), pending_then_boot(False)),
        Scenario(
            "boot_set_pending (permanent)", "tiny", base, pending(True), pending_then_boot(True)
        ),
        Scenario("boot_set_confirmed", "tiny", after_test_swap, confirm, confirm_then_boot),
        Scenario(
            "overwrite-only upgrade",
            "tiny-overwrite",
            staged(False),
            do_boot,
            swapped(False),
        ),
    ]


def run_campaign(sc: Scenario) -> CampaignResult:
    layout = load_board(sc.board)
    flash = Flash.for_layout(layout)
    sc.setup(flash, layout)
    start = flash.snapshot()
    ops0 = flash.ops
    sc.action(flash, layout)
    clean_ops = flash.ops - ops0
    result = CampaignResult(sc.name, sc.board, clean_ops)
    for n in range(1, clean_ops + 1):
        flash.restore(start)
        flash.arm_power_cut(n)
        try:
            sc.action(flash, layout)
        except PowerCut:
            pass
        else:
            result.failures.append(f"cut {n}: the action finished without reaching op {n}")
            continue
        res = _boot_until_done(flash, layout)
        errs = sc.check(flash, layout, res)
        result.failures.extend(f"cut {n}: {e}" for e in errs)
        result.cut_points += 1
    return result


def main(argv: list[str] | None = None) -> int:
    """Run under the one CLI runner: every error is one line and exit 2."""
    return run("powercut", lambda: _main(argv))


def _main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description="Run MCUboot power-cut campaigns on the model.")
    ap.parse_args(argv)

    v1, v2 = make_pair(load_board("tiny"))
    print("| scenario | board | flash ops (clean) | cut points | failures |")
    print("|---|---|---|---|---|")
    bad = 0
    for sc in scenarios(v1, v2):
        r = run_campaign(sc)
        bad += len(r.failures)
        print(f"| {r.scenario} | {r.board} | {r.clean_ops} | {r.cut_points} | {len(r.failures)} |")
        for f in r.failures[:5]:
            print(f"  - {f}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
