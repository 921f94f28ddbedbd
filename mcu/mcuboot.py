# MCUboot's image trailer, swap-type table and image-header reading, for code that runs
# on the microcontroller (CircuitPython subset) and for the host's MCUboot model.
#
# Written by hand because it must run on the MCU: offsets, magic and flag rules follow
# MCUboot's bootutil_public.c / bootutil_misc.h byte for byte.
#
# A flash area is any object with: size, sector_size, write_size, erased_val,
# read(off, n) -> bytes, write(off, data), erase(off, n).

import struct

try:
    from typing import Any, Dict, Optional, Tuple
except ImportError:  # CircuitPython: annotations are not evaluated
    pass

try:
    from micropython import const
except ImportError:  # CPython

    def const(x: int) -> int:  # type: ignore[misc]
        return x


IMAGE_MAGIC = const(0x96F3B83D)
TLV_INFO_MAGIC = const(0x6907)
TLV_PROT_INFO_MAGIC = const(0x6908)
TLV_SHA256 = const(0x10)
TLV_SHA384 = const(0x11)
TLV_SHA512 = const(0x12)
HEADER_SIZE = const(32)
IMAGE_F_NON_BOOTABLE = const(0x10)

# Swap types (bootutil_public.h).
SWAP_NONE = const(1)
SWAP_TEST = const(2)
SWAP_PERM = const(3)
SWAP_REVERT = const(4)
SWAP_FAIL = const(5)
SWAP_PANIC = const(0xFF)
SWAP_NAMES = {1: "none", 2: "test", 3: "perm", 4: "revert", 5: "fail", 0xFF: "panic"}

# Magic states and flag states, with MCUboot's numeric values.
MAGIC_GOOD = const(1)
MAGIC_BAD = const(2)
MAGIC_UNSET = const(3)
MAGIC_ANY = const(4)
MAGIC_NOTGOOD = const(5)
FLAG_SET = const(1)
FLAG_BAD = const(2)
FLAG_UNSET = const(3)
FLAG_ANY = const(4)
MAGIC_NAMES = {1: "good", 2: "bad", 3: "unset"}
FLAG_NAMES = {1: "set", 2: "bad", 3: "unset"}

MAGIC_SZ = const(16)
# BOOT_MAX_ALIGN == 8: the historical magic.
MAGIC_8 = b"\x77\xc2\x95\xf3\x60\xd2\xef\x7f\x35\x52\x50\x0f\x2c\xb6\x79\x80"
# Other BOOT_MAX_ALIGN values: u16 LE max_align, then these 14 bytes.
MAGIC_TAIL = b"\x2d\xe1\x5d\x29\x41\x0b\x8d\x77\x67\x9c\x11\x0f\x1f\x8a"

# The swap-type table (boot_swap_tables in bootutil_public.c), as boot_swap_type_multi
# reads it in a build without MCUBOOT_SWAP_USING_OFFSET (swap-using-move, scratch and
# overwrite-only): first match wins, no match is NONE.  Columns: primary magic, secondary
# magic, primary image_ok, secondary image_ok, primary copy_done, result.  The secondary's
# copy_done is a column of the swap-using-offset build only (its extra first REVERT row).
SWAP_TABLE = (
    # boot_swap_tables[0] (design.md "State II"): a test image waits in the secondary.
    (MAGIC_ANY, MAGIC_GOOD, FLAG_ANY, FLAG_UNSET, FLAG_ANY, SWAP_TEST),
    # boot_swap_tables[1] ("State III"): a permanent image waits in the secondary.
    (MAGIC_ANY, MAGIC_GOOD, FLAG_ANY, FLAG_SET, FLAG_ANY, SWAP_PERM),
    # boot_swap_tables[2] ("State IV"): the primary was swapped in (copy_done) and never
    # confirmed.  The secondary's magic is ANY, not UNSET, since MCUboot v2.2.0 ("Fix
    # device brick after power failure during swap-move revert"): a cut while the revert's
    # fixup_revert writes the secondary magic leaves it BAD, and the revert must still run.
    (MAGIC_GOOD, MAGIC_ANY, FLAG_UNSET, FLAG_ANY, FLAG_SET, SWAP_REVERT),
)

# Swap status entries per sector (BOOT_STATUS_STATE_COUNT, bootutil_area.h): swap-using-move
# has one move state and two swap states; every other mode but swap-using-offset (2),
# overwrite-only included, reserves 3.
STATUS_STATE_COUNT = const(3)

MODE_SWAP_MOVE = "swap-move"
MODE_OVERWRITE_ONLY = "overwrite-only"


class McubootError(Exception):
    """A trailer operation MCUboot would refuse (e.g. a BAD magic)."""


def boot_magic(max_align: int) -> bytes:
    if max_align == 8:
        return MAGIC_8
    return struct.pack("<H", max_align) + MAGIC_TAIL


def align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def align_down(value: int, align: int) -> int:
    return value // align * align


class TrailerLayout:
    """Offsets of the trailer fields inside a slot of ``size`` bytes."""

    def __init__(self, size: int, max_align: int = 8) -> None:
        self.size = size
        self.max_align = max_align
        self.magic_off = size - MAGIC_SZ
        self.image_ok_off = align_down(self.magic_off - max_align, max_align)
        self.copy_done_off = self.image_ok_off - max_align
        self.swap_info_off = self.copy_done_off - max_align
        self.swap_size_off = self.swap_info_off - max_align
        self.info_size = size - self.swap_size_off

    def status_off(self, write_size: int, max_sectors: int, state_count: int = 3) -> int:
        """Start of the swap status area (``boot_status_off``)."""
        return self.swap_size_off - max_sectors * state_count * write_size


def trailer_sz(write_size: int, max_align: int = 8, max_sectors: int = 128) -> int:
    """``boot_trailer_sz`` (bootutil_area.c): bytes of trailer at the end of a slot.

    The swap status (BOOT_STATUS_MAX_ENTRIES = MCUBOOT_MAX_IMG_SECTORS entries of
    BOOT_STATUS_STATE_COUNT write blocks), then swap_size, swap_info, copy_done and
    image_ok (BOOT_MAX_ALIGN each) and the magic padded to BOOT_MAX_ALIGN.  No encryption
    keys (MCUBOOT_ENC_IMAGES is off).  The same in overwrite-only builds.
    """
    status = max_sectors * STATUS_STATE_COUNT * write_size
    return status + max_align * 4 + align_up(MAGIC_SZ, max_align)


def max_image_size(
    mode: str,
    primary_size: int,
    secondary_size: int,
    sector_size: int,
    trailer_size: int,
    max_align: int = 8,
) -> int:
    """The largest image (header + body + TLVs) MCUboot accepts in this pair of slots.

    This is ``bootutil_max_image_size`` (bootutil_misc.c), which bootutil_img_validate
    compares with the image's TLV end, for both slots the image passes through:

    - swap-using-move: ``app_max_size`` (swap_move.c): each slot less its trailer rounded
      up to whole sectors; the primary also less the one sector the move needs.
      ``trailer_size`` is ``boot_trailer_sz`` (``trailer_sz()``).
    - overwrite-only: ``boot_swap_info_off`` of each slot: the image may run up to the
      trailer's swap_info field; ``trailer_size`` plays no part.

    Slots are whole sectors of ``sector_size`` (uniform sectors).
    """
    if mode == MODE_OVERWRITE_ONLY:
        pri = TrailerLayout(primary_size, max_align).swap_info_off
        sec = TrailerLayout(secondary_size, max_align).swap_info_off
        return pri if pri < sec else sec
    if mode != MODE_SWAP_MOVE:
        raise ValueError("unknown MCUboot mode %r" % (mode,))
    trailer = align_up(trailer_size, sector_size)
    pri = primary_size // sector_size * sector_size - trailer - sector_size
    sec = secondary_size // sector_size * sector_size - trailer
    return pri if pri < sec else sec


class SwapState:
    """What one slot's trailer says (``struct boot_swap_state``)."""

    def __init__(
        self,
        magic: int,
        swap_type: int,
        image_num: int,
        copy_done: int,
        image_ok: int,
        swap_size: "Optional[int]",
    ) -> None:
        self.magic = magic
        self.swap_type = swap_type
        self.image_num = image_num
        self.copy_done = copy_done
        self.image_ok = image_ok
        self.swap_size = swap_size

    def __repr__(self) -> str:
        return "SwapState(magic=%s, swap_type=%s, image_num=%d, copy_done=%s, image_ok=%s)" % (
            MAGIC_NAMES.get(self.magic, "?"),
            SWAP_NAMES.get(self.swap_type, "?"),
            self.image_num,
            FLAG_NAMES.get(self.copy_done, "?"),
            FLAG_NAMES.get(self.image_ok, "?"),
        )

    def as_tuple(self) -> "Tuple[int, int, int, int, int]":
        return (self.magic, self.swap_type, self.image_num, self.copy_done, self.image_ok)


def _erased(buf: bytes, erased_val: int) -> bool:
    for b in buf:
        if b != erased_val:
            return False
    return True


def _flag(byte: int, erased_val: int) -> int:
    if byte == erased_val:
        return FLAG_UNSET
    if byte == FLAG_SET:
        return FLAG_SET
    return FLAG_BAD


def parse_trailer(tail: bytes, size: int, max_align: int = 8, erased_val: int = 0xFF) -> SwapState:
    """Decode the last ``TrailerLayout(size).info_size`` bytes of a slot (pure)."""
    t = TrailerLayout(size, max_align)
    base = t.swap_size_off
    magic = bytes(tail[t.magic_off - base : t.magic_off - base + MAGIC_SZ])
    if _erased(magic, erased_val):
        m = MAGIC_UNSET
    elif magic == boot_magic(max_align):
        m = MAGIC_GOOD
    else:
        m = MAGIC_BAD
    info = tail[t.swap_info_off - base]
    swap_type = info & 0x0F
    image_num = info >> 4
    if info == erased_val or swap_type > SWAP_REVERT:
        swap_type = SWAP_NONE
        image_num = 0
    copy_done = _flag(tail[t.copy_done_off - base], erased_val)
    image_ok = _flag(tail[t.image_ok_off - base], erased_val)
    raw_size = bytes(tail[0:4])
    swap_size = None if _erased(raw_size, erased_val) else struct.unpack("<I", raw_size)[0]
    return SwapState(m, swap_type, image_num, copy_done, image_ok, swap_size)


def read_swap_state(area: "Any", max_align: int = 8) -> SwapState:
    t = TrailerLayout(area.size, max_align)
    tail = area.read(t.swap_size_off, t.info_size)
    return parse_trailer(tail, area.size, max_align, area.erased_val)


def swap_type_for(primary: SwapState, secondary: SwapState, table: "Any" = SWAP_TABLE) -> int:
    """Match two SwapStates against the table (``boot_swap_type_multi``)."""
    for mp, ms, okp, oks, cdp, result in table:
        if not _magic_ok(mp, primary.magic) or not _magic_ok(ms, secondary.magic):
            continue
        if okp != FLAG_ANY and okp != primary.image_ok:
            continue
        if oks != FLAG_ANY and oks != secondary.image_ok:
            continue
        if cdp != FLAG_ANY and cdp != primary.copy_done:
            continue
        return int(result)
    return SWAP_NONE


def _magic_ok(want: int, have: int) -> bool:
    if want == MAGIC_ANY:
        return True
    if want == MAGIC_NOTGOOD:
        return have != MAGIC_GOOD
    return want == have


def swap_type(primary_area: "Any", secondary_area: "Any", max_align: int = 8) -> int:
    return swap_type_for(
        read_swap_state(primary_area, max_align), read_swap_state(secondary_area, max_align)
    )


# -- writers (one flash write each, padded to the write block with the erased value) --


def _write_trailer(area: "Any", off: int, data: bytes) -> None:
    n = align_up(len(data), area.write_size)
    buf = bytearray(bytes([area.erased_val]) * n)  # MicroPython: no bytearray * int
    buf[0 : len(data)] = data
    area.write(off, buf)


def write_magic(area: "Any", max_align: int = 8) -> None:
    t = TrailerLayout(area.size, max_align)
    pad = align_up(MAGIC_SZ, max_align)
    buf = bytearray(bytes([area.erased_val]) * pad)
    buf[pad - MAGIC_SZ :] = boot_magic(max_align)
    area.write(align_down(t.magic_off, max_align), buf)


def write_image_ok(area: "Any", max_align: int = 8) -> None:
    _write_trailer(area, TrailerLayout(area.size, max_align).image_ok_off, b"\x01")


def write_copy_done(area: "Any", max_align: int = 8) -> None:
    _write_trailer(area, TrailerLayout(area.size, max_align).copy_done_off, b"\x01")


def write_swap_info(area: "Any", swap_type: int, image_num: int = 0, max_align: int = 8) -> None:
    info = ((image_num & 0x0F) << 4) | (swap_type & 0x0F)
    _write_trailer(area, TrailerLayout(area.size, max_align).swap_info_off, bytes([info]))


def write_swap_size(area: "Any", swap_size: int, max_align: int = 8) -> None:
    _write_trailer(
        area, TrailerLayout(area.size, max_align).swap_size_off, struct.pack("<I", swap_size)
    )


def set_next(
    area: "Any", active: bool, confirm: bool, image_num: int = 0, max_align: int = 8
) -> int:
    """``boot_set_next``: schedule the secondary slot, or confirm the active one.

    Returns 0, or raises McubootError for a BAD magic, as MCUboot returns an error.
    """
    if active:
        confirm = True
    st = read_swap_state(area, max_align)
    if st.magic == MAGIC_GOOD:
        if active and st.image_ok == FLAG_UNSET:
            write_image_ok(area, max_align)
    elif st.magic == MAGIC_UNSET:
        if not active:
            write_magic(area, max_align)
            if confirm:
                write_image_ok(area, max_align)
            write_swap_info(area, SWAP_PERM if confirm else SWAP_TEST, image_num, max_align)
    else:
        raise McubootError("slot trailer has a bad magic: the slot must be erased first")
    return 0


def set_pending(
    secondary_area: "Any", permanent: bool = False, image_num: int = 0, max_align: int = 8
) -> int:
    """``boot_set_pending``: mark the secondary slot for a test (or permanent) swap."""
    return set_next(secondary_area, False, permanent, image_num, max_align)


def set_confirmed(primary_area: "Any", max_align: int = 8) -> int:
    """``boot_set_confirmed``: make the running image permanent."""
    return set_next(primary_area, True, True, 0, max_align)


# -- image header and hash TLV (enough for SMP state reporting) -----------------------

HEADER_FMT = "<IIHHIIBBHII"


def parse_header(buf: bytes) -> "Optional[Dict[str, Any]]":
    """Decode a 32-byte MCUboot header: returns a dict, or None when the magic is wrong."""
    if len(buf) < HEADER_SIZE:
        return None
    f = struct.unpack(HEADER_FMT, bytes(buf[0:HEADER_SIZE]))
    if f[0] != IMAGE_MAGIC:
        return None
    return {
        "load_addr": f[1],
        "hdr_size": f[2],
        "protect_tlv_size": f[3],
        "img_size": f[4],
        "flags": f[5],
        "version": (f[6], f[7], f[8], f[9]),
    }


def version_str(v: "Tuple[int, int, int, int]") -> str:
    """Format like Zephyr's img_mgmt_ver_str: major.minor.revision[.build]."""
    if v[3]:
        return "%d.%d.%d.%d" % v
    return "%d.%d.%d" % (v[0], v[1], v[2])


def image_info(area: "Any") -> "Optional[Dict[str, Any]]":
    """Read an image's header and hash TLV from a slot.

    Returns a dict with version, hash (the SHA TLV value, as SMP reports it), flags and
    total size (header through TLVs), or None when the slot holds no valid image layout.
    """
    hdr = parse_header(area.read(0, HEADER_SIZE))
    if hdr is None:
        return None
    off = hdr["hdr_size"] + hdr["img_size"]
    if hdr["hdr_size"] < HEADER_SIZE or off + 4 > area.size:
        return None
    magic, tot = struct.unpack("<HH", area.read(off, 4))
    if magic == TLV_PROT_INFO_MAGIC:
        if tot != hdr["protect_tlv_size"]:
            return None
        off += tot
        if off + 4 > area.size:
            return None
        magic, tot = struct.unpack("<HH", area.read(off, 4))
    elif hdr["protect_tlv_size"]:
        return None
    if magic != TLV_INFO_MAGIC or off + tot > area.size or tot < 4:
        return None
    end = off + tot
    p = off + 4
    digest = None
    while p + 4 <= end:
        t, n = struct.unpack("<HH", area.read(p, 4))
        if p + 4 + n > end:
            return None
        if t in (TLV_SHA256, TLV_SHA384, TLV_SHA512) and digest is None:
            if n != {TLV_SHA256: 32, TLV_SHA384: 48, TLV_SHA512: 64}[t]:
                return None  # a hash TLV of the wrong length: Zephyr refuses the image
            digest = area.read(p + 4, n)
        p += 4 + n
    if digest is None:
        return None
    return {
        "version": hdr["version"],
        "hash": digest,
        "flags": hdr["flags"],
        "size": end,
        "hdr_size": hdr["hdr_size"],
        "img_size": hdr["img_size"],
    }
