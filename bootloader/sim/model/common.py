"""Shared pieces of the MCUboot model: boot status, region helpers, image validation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from bootloader.formats.image import ImageError
from bootloader.formats.layout import TMPBUF_SZ, Layout, align_down
from bootloader.formats.verify import verify_image
from bootloader.sim.flash import FlashArea
from mcu import mcuboot as mb

OP_MOVE: Final = 1
OP_SWAP: Final = 2
IDX_0: Final = 1
STATE_0: Final = 1
SOURCE_NONE: Final = 0
SOURCE_PRIMARY: Final = 2


@dataclass
class BootStatus:
    """``struct boot_status``: where a swap stands; persisted as status bytes."""

    op: int = OP_MOVE
    idx: int = IDX_0
    state: int = STATE_0
    swap_type: int = mb.SWAP_NONE
    swap_size: int = 0
    source: int = SOURCE_NONE

    def is_reset(self) -> bool:
        return self.op == OP_MOVE and self.idx == IDX_0 and self.state == STATE_0


Validator = Callable[[bytes], "tuple[bool, str]"]


@dataclass
class BootContext:
    """Everything one boot works on: the two slots, the layout, the trusted keys."""

    layout: Layout
    pri: FlashArea
    sec: FlashArea
    validator: Validator
    log: list[str] = field(default_factory=list)

    @property
    def max_align(self) -> int:
        return self.layout.max_align

    def say(self, msg: str) -> None:
        self.log.append(msg)

    def state(self, area: FlashArea) -> mb.SwapState:
        return mb.read_swap_state(area, self.max_align)


class SwapStrategy(Protocol):
    """One MCUboot upgrade mode (a file per mode, as in bootutil)."""

    name: str

    def read_status(self, ctx: BootContext) -> BootStatus: ...

    def perform(self, ctx: BootContext, bs: BootStatus) -> int: ...

    def complete_partial(self, ctx: BootContext, bs: BootStatus) -> int: ...


def erase_region(area: FlashArea, off: int, size: int, backwards: bool = False) -> None:
    """``boot_erase_region`` on a device that needs erase: whole sectors, in order."""
    ss = area.sector_size
    first = align_down(off, ss)
    last = align_down(off + size - 1, ss)
    sectors = range(first, last + 1, ss)
    for s in reversed(sectors) if backwards else sectors:
        area.erase(s, ss)


def copy_region(src: FlashArea, dst: FlashArea, src_off: int, dst_off: int, size: int) -> None:
    """``boot_copy_region``: through a BOOT_TMPBUF_SZ buffer, one write per chunk."""
    done = 0
    while done < size:
        n = min(TMPBUF_SZ, size - done)
        dst.write(dst_off + done, src.read(src_off + done, n))
        done += n


def scramble_trailer_sectors(ctx: BootContext, area: FlashArea) -> None:
    """``swap_scramble_trailer_sectors``: erase from the trailer's sector to the end."""
    off = align_down(area.size - ctx.layout.trailer_size(), area.sector_size)
    erase_region(area, off, area.size - off, backwards=True)


def scramble_slot(area: FlashArea) -> None:
    erase_region(area, 0, area.size)


def image_size(area: FlashArea) -> int | None:
    info = mb.image_info(area)
    return None if info is None else int(info["size"])


def header_erased(area: FlashArea) -> bool:
    return area.read(0, 4) == bytes([area.erased_val]) * 4


def make_validator(keys: Sequence[Any] = ()) -> Validator:
    """Hash (and, with keys, signature) validation as ``bootutil_img_validate`` does."""

    def validate(data: bytes) -> tuple[bool, str]:

        try:
            result = verify_image(data, keys)
        except ImageError as exc:
            return False, str(exc)
        return bool(result.ok), str(result.reason or "ok")

    return validate


def validate_slot(ctx: BootContext, area: FlashArea) -> tuple[bool, str]:
    """``boot_check_header_valid`` + image validation of the image in ``area``."""
    hdr = mb.parse_header(area.read(0, mb.HEADER_SIZE))
    if hdr is None:
        return False, "bad image magic"
    if hdr["flags"] & 0x0C:
        return False, "encrypted images are not supported by this bootloader"
    if hdr["hdr_size"] + hdr["img_size"] + hdr["protect_tlv_size"] >= area.size:
        return False, "image header claims more than the slot holds"
    size = image_size(area)
    if size is None:
        return False, "image TLV area is missing or malformed"
    limit = max_image_size(ctx, area)
    if size > limit:
        # bootutil_img_validate: "TLV beyond image size".
        return False, f"image is {size} bytes, more than the {limit} bytes a slot holds"
    return ctx.validator(area.read(0, size))


def max_image_size(ctx: BootContext, area: FlashArea) -> int:
    """``bootutil_max_image_size(state, fap)``: overwrite-only's is per slot
    (``boot_swap_info_off(fap)``), swap-using-move's the pair's ``app_max_size``."""
    if ctx.layout.overwrite_only:
        return mb.TrailerLayout(area.size, ctx.max_align).swap_info_off
    return ctx.layout.max_image_size()
