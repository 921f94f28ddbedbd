"""MCUboot swap-using-move (``swap_move.c``), resumable from its persisted status.

The primary slot has one sector more than the secondary.  A swap first moves every
image sector of the primary up by one sector (top down), then for each index copies the
secondary's sector down into the primary and the moved-up old sector into the
secondary.  After every sector step one status entry is written into the primary's
trailer, so a boot cut at any flash operation resumes where it stopped.
"""

from __future__ import annotations

from typing import Final

from bootloader.sim.model.common import (
    IDX_0,
    OP_MOVE,
    OP_SWAP,
    SOURCE_NONE,
    SOURCE_PRIMARY,
    STATE_0,
    BootContext,
    BootStatus,
    copy_region,
    erase_region,
    image_size,
    scramble_trailer_sectors,
)
from mcu import mcuboot as mb

MOVE_STATE_COUNT: Final = 1
SWAP_STATE_COUNT: Final = 2
STATE_COUNT: Final = MOVE_STATE_COUNT + SWAP_STATE_COUNT


class SwapMove:
    name = "swap-move"

    # -- status --------------------------------------------------------------------
    def _status_off(self, ctx: BootContext) -> int:
        t = mb.TrailerLayout(ctx.pri.size, ctx.max_align)
        return t.status_off(ctx.layout.write_size, ctx.layout.max_sectors, STATE_COUNT)

    def _internal_off(self, ctx: BootContext, bs: BootStatus) -> int:
        elem = ctx.layout.write_size
        if bs.op == OP_MOVE:
            base, per_idx = 0, MOVE_STATE_COUNT
        else:
            base, per_idx = ctx.layout.max_sectors * MOVE_STATE_COUNT * elem, SWAP_STATE_COUNT
        return base + (bs.idx - IDX_0) * per_idx * elem + (bs.state - STATE_0) * elem

    def write_status(self, ctx: BootContext, bs: BootStatus) -> None:
        buf = bytearray([ctx.pri.erased_val]) * ctx.layout.write_size
        buf[0] = bs.state
        ctx.pri.write(self._status_off(ctx) + self._internal_off(ctx, bs), buf)

    def read_status(self, ctx: BootContext) -> BootStatus:
        """``swap_read_status``: the status source, then the last status entry written."""
        bs = BootStatus()
        pri, sec = ctx.state(ctx.pri), ctx.state(ctx.sec)
        if (
            pri.magic == mb.MAGIC_GOOD
            and pri.copy_done == mb.FLAG_UNSET
            and (sec.magic != mb.MAGIC_GOOD)
        ):
            bs.source = SOURCE_PRIMARY
        else:
            bs.source = SOURCE_NONE
            return bs
        elem = ctx.layout.write_size
        off = self._status_off(ctx)
        max_entries = ctx.layout.max_sectors * STATE_COUNT
        found = -1
        for i in range(max_entries, 0, -1):
            if ctx.pri.read(off + (i - 1) * elem, 1)[0] != ctx.pri.erased_val:
                found = i
                break
        move_entries = ctx.layout.max_sectors * MOVE_STATE_COUNT
        if found == -1:
            pass
        elif found < move_entries:
            bs.op = OP_MOVE
            bs.idx = found // MOVE_STATE_COUNT + IDX_0
            bs.state = found % MOVE_STATE_COUNT + STATE_0
        else:
            bs.op = OP_SWAP
            bs.idx = (found - move_entries) // SWAP_STATE_COUNT + IDX_0
            bs.state = (found - move_entries) % SWAP_STATE_COUNT + STATE_0
        bs.swap_type = pri.swap_type
        return bs

    def _status_init(self, ctx: BootContext, bs: BootStatus) -> None:
        """``swap_status_init``: swap_info, image_ok (if the secondary's is set), size, magic."""
        sec = ctx.state(ctx.sec)
        if bs.swap_type != mb.SWAP_NONE:
            mb.write_swap_info(ctx.pri, bs.swap_type, 0, ctx.max_align)
        if sec.image_ok == mb.FLAG_SET:
            mb.write_image_ok(ctx.pri, ctx.max_align)
        mb.write_swap_size(ctx.pri, bs.swap_size, ctx.max_align)
        mb.write_magic(ctx.pri, ctx.max_align)

    # -- the swap ------------------------------------------------------------------
    def _move_sector_up(self, ctx: BootContext, idx: int, bs: BootStatus) -> None:
        ss = ctx.layout.sector_size
        if bs.idx == IDX_0:
            if bs.source != SOURCE_PRIMARY:
                scramble_trailer_sectors(ctx, ctx.pri)
                self._status_init(ctx, bs)
            scramble_trailer_sectors(ctx, ctx.sec)
        erase_region(ctx.pri, idx * ss, ss)
        copy_region(ctx.pri, ctx.pri, (idx - 1) * ss, idx * ss, ss)
        self.write_status(ctx, bs)
        bs.idx += 1

    def _swap_sectors(self, ctx: BootContext, idx: int, bs: BootStatus) -> None:
        ss = ctx.layout.sector_size
        pri_off, pri_up_off, sec_off = (idx - 1) * ss, idx * ss, (idx - 1) * ss
        if bs.state == STATE_0:
            erase_region(ctx.pri, pri_off, ss)
            copy_region(ctx.sec, ctx.pri, sec_off, pri_off, ss)
            self.write_status(ctx, bs)
            bs.state = STATE_0 + 1
        if bs.state == STATE_0 + 1:
            erase_region(ctx.sec, sec_off, ss)
            copy_region(ctx.pri, ctx.sec, pri_up_off, sec_off, ss)
            self.write_status(ctx, bs)
            bs.idx += 1
            bs.state = STATE_0

    def _fixup_revert(self, ctx: BootContext, bs: BootStatus) -> None:
        """Make an interrupted revert look like a permanent swap to the next boot."""
        if bs.swap_type != mb.SWAP_REVERT or bs.op != OP_MOVE or bs.idx != IDX_0:
            return
        if ctx.state(ctx.sec).magic == mb.MAGIC_UNSET:
            scramble_trailer_sectors(ctx, ctx.sec)
            mb.write_image_ok(ctx.sec, ctx.max_align)
            mb.write_swap_size(ctx.sec, bs.swap_size, ctx.max_align)
            mb.write_magic(ctx.sec, ctx.max_align)

    def _run(self, ctx: BootContext, bs: BootStatus, copy_size: int) -> bool:
        ss = ctx.layout.sector_size
        last_idx = max(1, -(-copy_size // ss))
        if bs.is_reset():
            first_trailer_idx = ctx.pri.sector_count() - ctx.layout.trailer_sectors()
            if last_idx >= first_trailer_idx:
                ctx.say(
                    f"not enough free space to run swap upgrade: required {(last_idx + 1) * ss}"
                    f" bytes but only {first_trailer_idx * ss} are available"
                )
                return False
        self._fixup_revert(ctx, bs)
        if bs.op == OP_MOVE:
            for idx in range(last_idx, 0, -1):
                if idx <= last_idx - bs.idx + 1:
                    self._move_sector_up(ctx, idx, bs)
            bs.idx = IDX_0
        bs.op = OP_SWAP
        for idx in range(1, last_idx + 1):
            if idx >= bs.idx:
                self._swap_sectors(ctx, idx, bs)
        return True

    def _swap_image(self, ctx: BootContext, bs: BootStatus) -> bool:
        """``boot_swap_image``: size the swap (fresh or from the trailer) and run it."""
        if bs.is_reset():
            copy_size = image_size(ctx.pri) or 0
            size = image_size(ctx.sec) or 0
            bs.swap_size = max(copy_size, size)
        else:
            stored = ctx.state(ctx.pri).swap_size
            bs.swap_size = stored if stored is not None else 0
        return self._run(ctx, bs, bs.swap_size)

    def _finish(self, ctx: BootContext, swap_type: int) -> None:
        upgrade_ok = swap_type in (mb.SWAP_REVERT, mb.SWAP_PERM)
        if upgrade_ok and ctx.state(ctx.pri).image_ok == mb.FLAG_UNSET:
            mb.write_image_ok(ctx.pri, ctx.max_align)
        if swap_type in (mb.SWAP_TEST, mb.SWAP_PERM, mb.SWAP_REVERT):
            mb.write_copy_done(ctx.pri, ctx.max_align)

    def perform(self, ctx: BootContext, bs: BootStatus) -> int:
        """``boot_perform_update``: swap, then image_ok/copy_done as the type requires."""
        if not self._swap_image(ctx, bs):
            return mb.SWAP_NONE
        self._finish(ctx, bs.swap_type)
        return bs.swap_type

    def complete_partial(self, ctx: BootContext, bs: BootStatus) -> int:
        """``boot_complete_partial_swap``: resume from the status entries."""
        ctx.say(
            f"resuming interrupted {mb.SWAP_NAMES.get(bs.swap_type, '?')} swap "
            f"(op={'move' if bs.op == OP_MOVE else 'swap'}, idx={bs.idx}, state={bs.state})"
        )
        self._swap_image(ctx, bs)
        self._finish(ctx, bs.swap_type)
        return bs.swap_type
