"""MCUboot overwrite-only mode (``boot_copy_image``): no revert, restart-safe.

The copy is not resumable; it is simply redone.  It is safe because the secondary's
trailer (which requests the upgrade) is erased only after the primary is complete.
"""

from __future__ import annotations

from bootloader.sim.model.common import (
    BootContext,
    BootStatus,
    copy_region,
    erase_region,
    image_size,
    scramble_trailer_sectors,
)
from mcu import mcuboot as mb


class OverwriteOnly:
    name = "overwrite-only"

    def read_status(self, ctx: BootContext) -> BootStatus:
        return BootStatus()  # nothing to resume in overwrite-only mode

    def perform(self, ctx: BootContext, bs: BootStatus) -> int:
        src_size = image_size(ctx.sec) or 0
        ss = ctx.layout.sector_size
        ws = ctx.layout.write_size
        size = 0
        for _ in range(ctx.pri.sector_count()):
            erase_region(ctx.pri, size, ss)
            if size + ss >= src_size:
                size = src_size
                size += ws - (size % ws)  # MCUboot rounds up by a whole block when aligned
                break
            size += ss
        scramble_trailer_sectors(ctx, ctx.pri)
        size = min(size, ctx.sec.size)
        copy_region(ctx.sec, ctx.pri, 0, 0, size)
        mb.write_magic(ctx.pri, ctx.max_align)
        erase_region(ctx.sec, 0, ss)
        last = (ctx.sec.sector_count() - 1) * ss
        erase_region(ctx.sec, last, ss)
        return bs.swap_type

    def complete_partial(self, ctx: BootContext, bs: BootStatus) -> int:
        raise AssertionError("overwrite-only never has a partial swap to complete")
