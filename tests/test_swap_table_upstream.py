"""The swap-type decision against MCUboot's own rules, every trailer state, and the boot
decisions that follow when the secondary image is not valid.

Oracle: the table of ``boot_swap_tables`` (bootutil_public.c) as MCUboot's design document
("Image trailers", States II-IV) states it, transcribed below as text and matched by a
small interpreter of that text, independent of ``mcu.mcuboot.SWAP_TABLE``.  Trailer bytes
are laid out by hand from bootutil_misc.h (``boot_magic_off``, ``boot_image_ok_off``,
``boot_copy_done_off``, ``boot_swap_info_off``), so ``read_swap_state``'s decoding
(``boot_magic_decode``, ``boot_flag_decode``) is under test too.
"""

from __future__ import annotations

import itertools
from typing import Final

import pytest

from bootloader.formats.layout import Layout, load_board
from bootloader.sim.flash import Flash, PowerCut
from bootloader.sim.model.boot import boot
from bootloader.sim.testimages import make_pair
from mcu import mcuboot as mb
from mcu.flash_area import RamArea

# boot_swap_tables, build without MCUBOOT_SWAP_USING_OFFSET (design.md States II-IV);
# first match wins, no match is BOOT_SWAP_TYPE_NONE (boot_swap_type_multi).
UPSTREAM_STATES: Final = """
state | pri magic | pri image-ok | pri copy-done | sec magic | sec image-ok | result
II    | any       | any          | any           | good      | unset        | test
III   | any       | any          | any           | good      | set          | perm
IV    | good      | unset        | set           | any       | any          | revert
"""

# The same table before MCUboot v2.2.0: State IV wanted an UNSET secondary magic.
PRE_2_2_STATES: Final = UPSTREAM_STATES.replace(
    "| set           | any       | any", "| set           | unset     | any"
)

FIELDS: Final = ("pri magic", "pri image-ok", "pri copy-done", "sec magic", "sec image-ok")
MAGICS: Final = ("good", "bad", "unset")
FLAGS: Final = ("set", "bad", "unset")

# bootutil_public.h
SWAP_TYPE: Final = {"none": 1, "test": 2, "perm": 3, "revert": 4, "fail": 5}
MAGIC_VALUE: Final = {"good": 1, "bad": 2, "unset": 3}
FLAG_VALUE: Final = {"set": 1, "bad": 2, "unset": 3}

# The BOOT_MAX_ALIGN == 8 magic; for other alignments u16 LE align, then 14 fixed bytes.
MAGIC_8: Final = bytes.fromhex("77c295f360d2ef7f3552500f2cb67980")
MAGIC_TAIL: Final = bytes.fromhex("2de15d29410b8d77679c110f1f8a")


def parse_states(text: str) -> list[dict[str, str]]:
    lines = text.strip().splitlines()
    head = [c.strip() for c in lines[0].split("|")]
    return [
        dict(zip(head, (c.strip() for c in line.split("|")), strict=True)) for line in lines[1:]
    ]


def oracle(states: list[dict[str, str]], have: dict[str, str]) -> str:
    for row in states:
        if all(row[f] in ("any", have[f]) for f in FIELDS):
            return row["result"]
    return "none"


SLOT: Final = 0x800


def slot_bytes(magic: str, image_ok: str, copy_done: str, max_align: int, erased: int) -> bytes:
    """A slot whose trailer says what it is told, laid out as bootutil_misc.h does."""
    buf = bytearray([erased]) * SLOT
    magic_off = SLOT - 16
    image_ok_off = (magic_off - max_align) // max_align * max_align
    copy_done_off = image_ok_off - max_align
    swap_info_off = copy_done_off - max_align
    good = MAGIC_8 if max_align == 8 else max_align.to_bytes(2, "little") + MAGIC_TAIL
    if magic == "good":
        buf[magic_off:] = good
    elif magic == "bad":
        buf[magic_off:] = good[:8] + bytes([erased]) * 8  # half written
    # A BAD flag is anything but 0x01 that is not erased; vary it.
    bad = {0xFF: (0x00, 0x02, 0xFE), 0x00: (0x02, 0xFF, 0x80)}[erased]
    for off, state, k in ((image_ok_off, image_ok, 0), (copy_done_off, copy_done, 1)):
        if state == "set":
            buf[off] = 0x01
        elif state == "bad":
            buf[off] = bad[k]
    buf[swap_info_off] = 0x02 if erased == 0xFF else 0x12  # ignored by the table
    return bytes(buf)


def area(content: bytes, erased: int) -> RamArea:
    a = RamArea(SLOT, SLOT, 1, erased)
    a.mem[:] = content
    return a


ALL_STATES: Final = [
    dict(zip((*FIELDS, "sec copy-done"), combo, strict=True))
    for combo in itertools.product(MAGICS, FLAGS, FLAGS, MAGICS, FLAGS, FLAGS)
]


@pytest.mark.parametrize(("max_align", "erased"), [(8, 0xFF), (32, 0xFF), (8, 0x00)])
def test_every_trailer_combination_matches_upstream(max_align: int, erased: int) -> None:
    states = parse_states(UPSTREAM_STATES)
    wrong = []
    for have in ALL_STATES:
        pri = area(
            slot_bytes(
                have["pri magic"], have["pri image-ok"], have["pri copy-done"], max_align, erased
            ),
            erased,
        )
        sec = area(
            slot_bytes(
                have["sec magic"], have["sec image-ok"], have["sec copy-done"], max_align, erased
            ),
            erased,
        )
        # boot_read_swap_state: the decoded fields, with MCUboot's numeric values.
        ps, ss = mb.read_swap_state(pri, max_align), mb.read_swap_state(sec, max_align)
        decoded = (ps.magic, ps.image_ok, ps.copy_done, ss.magic, ss.image_ok, ss.copy_done)
        assert decoded == (
            MAGIC_VALUE[have["pri magic"]],
            FLAG_VALUE[have["pri image-ok"]],
            FLAG_VALUE[have["pri copy-done"]],
            MAGIC_VALUE[have["sec magic"]],
            FLAG_VALUE[have["sec image-ok"]],
            FLAG_VALUE[have["sec copy-done"]],
        ), have
        want = SWAP_TYPE[oracle(states, have)]
        if mb.swap_type(pri, sec, max_align) != want:
            wrong.append(have)
    assert len(ALL_STATES) == 3**6
    assert wrong == []


def test_the_comparison_catches_the_pre_2_2_revert_row() -> None:
    """Matched against the older table, ours differs exactly where State IV's secondary
    magic matters: a revert interrupted while writing the secondary magic (BAD), and a
    GOOD secondary whose image_ok is BAD (neither State II nor III)."""
    old = parse_states(PRE_2_2_STATES)
    assert old != parse_states(UPSTREAM_STATES)
    differ = []
    for have in ALL_STATES:
        pri = area(
            slot_bytes(have["pri magic"], have["pri image-ok"], have["pri copy-done"], 8, 0xFF),
            0xFF,
        )
        sec = area(
            slot_bytes(have["sec magic"], have["sec image-ok"], have["sec copy-done"], 8, 0xFF),
            0xFF,
        )
        if mb.swap_type(pri, sec) != SWAP_TYPE[oracle(old, have)]:
            differ.append((have["sec magic"], have["sec image-ok"]))
    assert differ
    assert set(differ) == {("bad", "set"), ("bad", "bad"), ("bad", "unset"), ("good", "bad")}


# -- boot decisions with a secondary image that is not valid (loader.c) ---------------------


def loaded(layout: Layout, v1: bytes, v2: bytes) -> Flash:
    f = Flash.for_layout(layout)
    for part, img in ((layout.slot0, v1), (layout.slot1, v2)):
        f.area(part).write(0, img + b"\xff" * (-len(img) % layout.write_size))
    return f


def corrupt(flash: Flash, layout: Layout, slot_off: int) -> None:
    """Flip one bit of the secondary image's body (as a bad transfer or a worn cell would)."""
    snap = bytearray(flash.snapshot())
    snap[layout.slot1.offset + slot_off] ^= 0x01
    flash.restore(bytes(snap))


def trailer(flash: Flash, layout: Layout, part_name: str) -> tuple[int, int, int]:
    st = mb.read_swap_state(flash.area(layout.partitions[part_name]), layout.max_align)
    return st.magic, st.image_ok, st.copy_done


UNSET3: Final = (MAGIC_VALUE["unset"], FLAG_VALUE["unset"], FLAG_VALUE["unset"])
# magic GOOD, image_ok SET, copy_done UNSET
CONFIRMED_NOT_COPIED: Final = (MAGIC_VALUE["good"], FLAG_VALUE["set"], FLAG_VALUE["unset"])


def erased(flash: Flash, layout: Layout) -> bool:
    sec = flash.area(layout.slot1)
    return sec.read(0, sec.size) == bytes([layout.erased_val]) * sec.size


@pytest.mark.parametrize("permanent", [False, True])
def test_requested_swap_of_an_invalid_image_is_none_and_the_slot_is_erased(
    tiny: Layout, tiny_pair: tuple[bytes, bytes], permanent: bool
) -> None:
    """boot_validated_swap_type: boot_validate_slot erases the invalid secondary and answers
    FIH_NO_BOOTABLE_IMAGE, so the swap type is NONE; nothing is written to the primary."""
    v1, v2 = tiny_pair
    f = loaded(tiny, v1, v2)
    mb.set_pending(f.area(tiny.slot1), permanent)
    corrupt(f, tiny, 100)
    before = trailer(f, tiny, "slot0")
    r = boot(f, tiny)
    assert r.swap_type == "none"
    assert r.booted is not None and r.booted.version == "1.0.0"
    assert erased(f, tiny)
    assert trailer(f, tiny, "slot0") == before == UNSET3
    again = boot(f, tiny)
    assert (again.swap_type, again.flash_ops) == ("none", 0)


def started_swap(layout: Layout, v1: bytes, v2: bytes, permanent: bool) -> Flash:
    """The flash after a power cut just after a swap started: the primary's trailer says
    which swap (swap_info, magic, copy_done unset), the secondary's trailer is scrambled,
    and no status entry is written yet (swap_status_source: the primary)."""
    f = loaded(layout, v1, v2)
    mb.set_pending(f.area(layout.slot1), permanent)
    start = f.snapshot()
    want_type = SWAP_TYPE["perm" if permanent else "test"]
    for n in range(1, 200):
        f.restore(start)
        f.arm_power_cut(n)
        try:
            boot(f, layout)
        except PowerCut:
            pass
        else:
            break
        pri = mb.read_swap_state(f.area(layout.slot0), layout.max_align)
        sec = mb.read_swap_state(f.area(layout.slot1), layout.max_align)
        if (pri.magic, pri.copy_done, pri.swap_type, sec.magic) == (
            MAGIC_VALUE["good"],
            FLAG_VALUE["unset"],
            want_type,
            MAGIC_VALUE["unset"],
        ):
            f.arm_power_cut(None)
            return f
    raise AssertionError("no power cut leaves a started swap")


@pytest.mark.parametrize("permanent", [False, True])
def test_a_started_swap_whose_image_went_bad_is_fail_and_the_primary_is_kept(
    tiny: Layout, tiny_pair: tuple[bytes, bytes], permanent: bool
) -> None:
    """boot_prepare_image_for_update: the status says a swap was starting, boot_validate_slot
    fails (and erases the slot): BOOT_SWAP_TYPE_FAIL.  context_boot_go then writes the
    primary's image_ok (swap_set_image_ok) so that no revert follows, and boots it."""
    v1, v2 = tiny_pair
    f = started_swap(tiny, v1, v2, permanent)
    assert f.area(tiny.slot0).read(0, len(v1)) == v1  # nothing moved yet
    corrupt(f, tiny, 100)
    r = boot(f, tiny)
    assert r.swap_type == "fail"
    assert erased(f, tiny)
    assert trailer(f, tiny, "slot0") == CONFIRMED_NOT_COPIED
    assert r.booted is not None and (r.booted.version, r.booted.confirmed) == ("1.0.0", True)
    # The primary's swap_info still announces the swap: every boot is FAIL, and harmless.
    again = boot(f, tiny)
    assert again.swap_type == "fail"
    assert again.booted is not None and again.booted.version == "1.0.0"
    assert trailer(f, tiny, "slot0") == CONFIRMED_NOT_COPIED


def test_a_started_swap_whose_secondary_was_erased_is_fail(
    tiny: Layout, tiny_pair: tuple[bytes, bytes]
) -> None:
    """FIH_NO_BOOTABLE_IMAGE (erased header) is a failure too on this path."""
    v1, v2 = tiny_pair
    f = started_swap(tiny, v1, v2, False)
    f.area(tiny.slot1).erase(0, tiny.sector_size)
    r = boot(f, tiny)
    assert r.swap_type == "fail"
    assert r.booted is not None and r.booted.version == "1.0.0"
    assert trailer(f, tiny, "slot0")[1] == FLAG_VALUE["set"]


@pytest.mark.parametrize("permanent", [False, True])
def test_a_started_swap_of_a_valid_image_goes_on(
    tiny: Layout, tiny_pair: tuple[bytes, bytes], permanent: bool
) -> None:
    v1, v2 = tiny_pair
    f = started_swap(tiny, v1, v2, permanent)
    r = boot(f, tiny)
    assert r.swap_type == ("perm" if permanent else "test")
    assert r.booted is not None and (r.booted.version, r.booted.confirmed) == ("2.0.0", permanent)


def test_a_stuck_revert_is_cleared_in_the_same_boot(
    tiny: Layout, tiny_pair: tuple[bytes, bytes]
) -> None:
    """boot_validate_slot, erased secondary header, swap-using-move: after scrambling the
    secondary's trailer it asks boot_swap_type_multi again, and a REVERT that can no longer
    happen (the old image is gone) erases the primary's trailer at once."""
    v1, v2 = tiny_pair
    f = loaded(tiny, v1, v2)
    mb.set_pending(f.area(tiny.slot1), False)
    assert boot(f, tiny).swap_type == "test"  # v2 runs on trial; v1 now in the secondary
    sec = f.area(tiny.slot1)
    sec.erase(0, tiny.sector_size)  # the old image's header is gone
    mb.set_pending(sec, False)  # and a test of nothing is requested: State II, not IV
    assert mb.swap_type(f.area(tiny.slot0), sec) == SWAP_TYPE["test"]
    r = boot(f, tiny)
    assert r.swap_type == "none"
    assert trailer(f, tiny, "slot1") == UNSET3
    assert trailer(f, tiny, "slot0") == UNSET3  # no revert left to attempt
    assert r.booted is not None and r.booted.version == "2.0.0"


def test_overwrite_only_invalid_image_is_none_and_the_primary_is_untouched() -> None:
    """Overwrite-only: the same NONE; no image_ok is written (swap_set_image_ok is compiled
    out of MCUBOOT_OVERWRITE_ONLY builds)."""

    lay = load_board("tiny-overwrite")
    v1, v2 = make_pair(lay)
    f = loaded(lay, v1, v2)
    mb.set_pending(f.area(lay.slot1), False)
    corrupt(f, lay, 100)
    primary_before = f.area(lay.slot0).read(0, lay.slot0.size)
    r = boot(f, lay)
    assert r.swap_type == "none"
    assert erased(f, lay)
    assert f.area(lay.slot0).read(0, lay.slot0.size) == primary_before
    assert r.booted is not None and r.booted.version == "1.0.0"
