"""What the largest-image tests share: MCUboot's limit from its source text, the board layouts
in each mode their slots allow, the images at and one byte over the limit, and a receiver.

Oracles: the limit is computed below from MCUboot's text (``boot_trailer_sz`` in
bootutil_area.c, ``app_max_size`` in swap_move.c, ``bootutil_max_image_size`` in
bootutil_misc.c with ``boot_swap_info_off`` from bootutil_misc.h), independently of
``mcu.mcuboot.max_image_size``; imgtool's ``--pad`` trailer check is a second oracle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
from smpclient.requests.image_management import ImageUploadWrite

from bootloader.formats.layout import (
    BOARDS_DIR,
    MODES,
    Layout,
    LayoutError,
    board_names,
    load_board,
)
from bootloader.formats.layout import validate as validate_layout
from bootloader.sim.flash import Flash
from bootloader.sim.model.boot import boot
from bootloader.sim.testimages import payload, sign
from mcu import smp_frame as sf
from mcu.receiver import make_server

MAGIC_SZ: Final = 16
HASH_TLVS: Final = 4 + 4 + 32  # TLV info header + SHA-256 TLV: a hash-only image
CHUNK: Final = 32 * 1024


def upstream_max_image_size(lay: Layout) -> int:
    """MCUboot's limit, from its source text, for uniform sectors."""
    ma = lay.max_align
    magic_align = (MAGIC_SZ + ma - 1) // ma * ma  # BOOT_MAGIC_ALIGN_SIZE
    if lay.mode == "overwrite-only":
        # bootutil_max_image_size (MCUBOOT_OVERWRITE_ONLY): boot_swap_info_off(fap), for the
        # secondary (validated before the copy) and the primary (validated after it).
        def swap_info_off(size: int) -> int:
            magic_off = size - MAGIC_SZ  # boot_magic_off
            image_ok_off = (magic_off - ma) // ma * ma  # ALIGN_DOWN(magic_off - MAX_ALIGN)
            copy_done_off = image_ok_off - ma
            return copy_done_off - ma

        return min(swap_info_off(lay.slot0.size), swap_info_off(lay.slot1.size))
    # boot_trailer_sz: BOOT_STATUS_MAX_ENTRIES (MCUBOOT_MAX_IMG_SECTORS) x
    # BOOT_STATUS_STATE_COUNT (1 move + 2 swap states) x write size, + 4 x BOOT_MAX_ALIGN
    # (swap_type, copy_done, image_ok, swap_size) + the aligned magic.
    trailer = lay.max_sectors * (1 + 2) * lay.write_size + 4 * ma + magic_align
    ss = lay.sector_size
    trailer = (trailer + ss - 1) // ss * ss  # "The trailer size needs to be sector-aligned"
    pri = lay.slot0.size // ss * ss - trailer - ss  # less the padding sector of the move
    sec = lay.slot1.size // ss * ss - trailer
    return min(pri, sec)


def variants() -> list[tuple[str, str]]:
    out = []
    for board in board_names():
        for mode in MODES:
            try:
                validate_layout(dataclasses.replace(load_board(board), mode=mode))
            except LayoutError:
                continue
            out.append((board, mode))
    return out


VARIANTS: Final = variants()
IDS: Final = [f"{b}-{m}" for b, m in VARIANTS]


@dataclasses.dataclass
class Case:
    layout: Layout
    toml: Path  # the board's layout file, in this mode
    limit: int  # from upstream_max_image_size
    v1: bytes  # the running image
    at_limit: bytes  # v2, exactly `limit` bytes
    over: bytes  # v2, limit + 1 bytes


def image_of(total: int, version: str, lay: Layout, seed: str) -> bytes:
    img = sign(payload(total - lay.header_size - HASH_TLVS, seed), version, lay)
    assert len(img) == total
    return img


_CASES: dict[tuple[str, str], Case] = {}


@pytest.fixture(scope="module")
def layout_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("layouts")


@pytest.fixture
def case(request: pytest.FixtureRequest, layout_dir: Path) -> Case:
    board, mode = request.param
    if (board, mode) not in _CASES:
        text = (BOARDS_DIR / f"{board}.toml").read_text()
        text, n = re.subn(r'(?m)^mode = "[^"]*"$', f'mode = "{mode}"', text)
        assert n == 1
        toml = layout_dir / f"{board}-{mode}.toml"
        toml.write_text(text)
        lay = load_board(toml)
        limit = upstream_max_image_size(lay)
        _CASES[(board, mode)] = Case(
            lay,
            toml,
            limit,
            image_of(lay.header_size + 3 * lay.sector_size // 2, "1.0.0", lay, "v1"),
            image_of(limit, "2.0.0", lay, f"{board}-{mode}"),
            image_of(limit + 1, "2.0.0", lay, f"{board}-{mode}+1"),
        )
    return _CASES[(board, mode)]


def by_case() -> Any:
    return pytest.mark.parametrize("case", VARIANTS, ids=IDS, indirect=True)


def new_flash(c: Case) -> Flash:
    f = Flash.for_layout(c.layout)
    write_image(f, c.layout.slot0, c.v1, c.layout)
    return f


def write_image(f: Flash, part: Any, img: bytes, lay: Layout) -> None:
    f.area(part).write(0, img + bytes([lay.erased_val]) * (-len(img) % lay.write_size))


def boots(f: Flash, c: Case, version: str) -> None:
    r = boot(f, c.layout)
    assert r.booted is not None and r.booted.version == version, r.log


# -- the receiver --------------------------------------------------------------------------


class Receiver:
    def __init__(self, c: Case, flash: Flash) -> None:
        lay = c.layout
        self.server = make_server(
            flash.area(lay.slot0),
            flash.area(lay.slot1),
            lambda: None,
            lay.max_align,
            lay.trailer_size(),
            lay.mode,
            buf_size=CHUNK + 1024,
        )

    def call(self, packet: bytes) -> dict[str, Any]:
        reply = self.server.handle(packet)
        assert reply is not None
        body = cbor2.loads(reply[sf.HEADER_SIZE :])
        assert isinstance(body, dict)
        return body

    def slot_info(self) -> dict[str, Any]:
        return self.call(sf.pack_header(sf.OP_READ, 1, 0, 1, 1, 0, 6) + b"\xa0")

    def upload(self, img: bytes, length: int | None = None) -> dict[str, Any]:
        """Upload ``img``; the last reply, or the first error."""
        size = len(img) if length is None else length
        sha = hashlib.sha256(img).digest()
        rsp = self.call(ImageUploadWrite(off=0, data=img[:CHUNK], len=size, sha=sha).BYTES)
        while "err" not in rsp and rsp["off"] < len(img):
            off = rsp["off"]
            rsp = self.call(ImageUploadWrite(off=off, data=img[off : off + CHUNK]).BYTES)
        return rsp
