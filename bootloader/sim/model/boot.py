"""One MCUboot boot (``context_boot_go``) on a modelled flash, single image.

decide (status, then the swap-type table) -> validate the secondary -> swap or copy
-> validate the primary -> report what runs, or a panic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bootloader.formats.layout import Layout
from bootloader.sim.flash import Flash
from bootloader.sim.model.common import (
    BootContext,
    BootStatus,
    SwapStrategy,
    Validator,
    header_erased,
    make_validator,
    scramble_slot,
    scramble_trailer_sectors,
    validate_slot,
)
from bootloader.sim.model.overwrite import OverwriteOnly
from bootloader.sim.model.swap_move import SwapMove
from mcu import mcuboot as mb


@dataclass
class BootedImage:
    slot: int
    version: str
    hash: str
    confirmed: bool
    payload_offset: int
    payload_size: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "version": self.version,
            "hash": self.hash,
            "confirmed": self.confirmed,
        }


@dataclass
class BootResult:
    swap_type: str
    booted: BootedImage | None
    flash_ops: int
    resumed: bool = False
    panic: str | None = None
    log: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "swap_type": self.swap_type,
            "resumed": self.resumed,
            "booted": self.booted.as_dict() if self.booted else None,
            "panic": self.panic,
            "flash_ops": self.flash_ops,
            "log": self.log,
        }


def strategy_for(layout: Layout) -> SwapStrategy:
    if layout.overwrite_only:
        return OverwriteOnly()
    return SwapMove()


def _validated_swap_type(ctx: BootContext, bs: BootStatus) -> int:
    """``boot_validated_swap_type``: the table, then the secondary image must be valid.

    An invalid secondary makes ``boot_validate_slot`` erase it and answer "no bootable
    image", which is NONE here (FAIL is for other errors, e.g. a flash read, which the
    model has none of): the primary boots as it is.
    """
    swap_type = mb.swap_type_for(ctx.state(ctx.pri), ctx.state(ctx.sec))
    if swap_type in (mb.SWAP_TEST, mb.SWAP_PERM, mb.SWAP_REVERT):
        ok = _validate_secondary(ctx, bs)
        if not ok:
            return mb.SWAP_NONE
    return swap_type


def _validate_secondary(ctx: BootContext, bs: BootStatus) -> bool:
    """``boot_validate_slot`` for the secondary, with MCUboot's clean-up on failure."""
    hdr = mb.parse_header(ctx.sec.read(0, mb.HEADER_SIZE))
    if header_erased(ctx.sec) or (hdr is not None and hdr["flags"] & mb.IMAGE_F_NON_BOOTABLE):
        # MCUboot compiles this clean-up for the swap modes only; the model also runs it in
        # overwrite-only mode (a secondary trailer left behind by a cut between the two
        # erases that end boot_copy_image is erased on the next boot, not kept).
        ctx.say("secondary slot holds no bootable image: its trailer is erased")
        scramble_trailer_sectors(ctx, ctx.sec)
        # swap-using-move: a revert that cannot happen (the old image is gone) would
        # repeat on every boot; the table is read again after the secondary's clean-up.
        if not ctx.layout.overwrite_only and (
            bs.swap_type == mb.SWAP_REVERT
            or mb.swap_type_for(ctx.state(ctx.pri), ctx.state(ctx.sec)) == mb.SWAP_REVERT
        ):
            ctx.say("primary trailer erased: a stuck revert")
            scramble_trailer_sectors(ctx, ctx.pri)
        return False
    ok, reason = validate_slot(ctx, ctx.sec)
    if not ok:
        ctx.say(f"image in the secondary slot is not valid ({reason}): slot erased")
        scramble_slot(ctx.sec)
        return False
    return True


def boot(
    flash: Flash,
    layout: Layout,
    keys: Sequence[Any] = (),
    validator: Validator | None = None,
) -> BootResult:
    """Run one boot.  A :class:`~bootloader.sim.flash.PowerCut` propagates to the caller."""
    ctx = BootContext(
        layout=layout,
        pri=flash.area(layout.slot0),
        sec=flash.area(layout.slot1),
        validator=validator or make_validator(keys),
    )
    ops_before = flash.ops
    strategy = strategy_for(layout)
    bs = strategy.read_status(ctx)
    resumed = False
    if not bs.is_reset():
        resumed = True
        swap_type = strategy.complete_partial(ctx, bs)
    else:
        if bs.swap_type == mb.SWAP_NONE:
            swap_type = _validated_swap_type(ctx, bs)
        else:
            # boot_prepare_image_for_update: the primary's swap_info says a swap was
            # starting (no status entry yet); any failure of the secondary is FAIL.
            ok = _validate_secondary(ctx, bs)
            swap_type = bs.swap_type if ok else mb.SWAP_FAIL
            if not ok:
                ctx.say("the swap the primary's trailer announces cannot run: swap type fail")
        bs.swap_type = swap_type
        if swap_type in (mb.SWAP_TEST, mb.SWAP_PERM, mb.SWAP_REVERT):
            swap_type = strategy.perform(ctx, bs)
            if layout.overwrite_only and swap_type != mb.SWAP_NONE:
                ctx.say("overwrite-only: secondary copied over the primary")
        elif (
            swap_type == mb.SWAP_FAIL
            and not layout.overwrite_only
            and ctx.state(ctx.pri).image_ok == mb.FLAG_UNSET
        ):
            # context_boot_go, BOOT_SWAP_TYPE_FAIL: swap_set_image_ok, "pretending we just
            # reverted back to primary slot", so that no revert follows.
            mb.write_image_ok(ctx.pri, layout.max_align)
    name = mb.SWAP_NAMES.get(swap_type, "panic")
    ok, reason = validate_slot(ctx, ctx.pri)
    if not ok:
        return BootResult(
            name,
            None,
            flash.ops - ops_before,
            resumed,
            panic=f"no bootable image in the primary slot: {reason}",
            log=ctx.log,
        )
    info = mb.image_info(ctx.pri)
    assert info is not None  # validate_slot succeeded
    pst = ctx.state(ctx.pri)
    confirmed = not (pst.magic == mb.MAGIC_GOOD and pst.image_ok == mb.FLAG_UNSET)
    booted = BootedImage(
        slot=0,
        version=mb.version_str(info["version"]),
        hash=bytes(info["hash"]).hex(),
        confirmed=confirmed,
        payload_offset=int(info["hdr_size"]),
        payload_size=int(info["img_size"]),
    )
    ctx.say(f"booting image version {booted.version} ({name})")
    return BootResult(name, booted, flash.ops - ops_before, resumed, log=ctx.log)
