"""MCUboot trailer: offsets, magic variants, writers, and agreement with imgtool dumpinfo."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bootloader.formats.layout import Partition
from bootloader.sim.flash import Flash, FlashArea, FlashError
from mcu import mcuboot as mb

SLOT = 0x2000


def area(write_size: int = 8, max_align: int = 8) -> FlashArea:
    f = Flash(SLOT * 2, 0x400, write_size)
    return f.area(Partition("slot", 0, SLOT))


@pytest.mark.parametrize(
    ("max_align", "image_ok", "copy_done", "swap_info", "swap_size"),
    [
        (8, SLOT - 24, SLOT - 32, SLOT - 40, SLOT - 48),
        (16, SLOT - 32, SLOT - 48, SLOT - 64, SLOT - 80),
        (32, SLOT - 64, SLOT - 96, SLOT - 128, SLOT - 160),
    ],
)
def test_offsets(
    max_align: int, image_ok: int, copy_done: int, swap_info: int, swap_size: int
) -> None:
    t = mb.TrailerLayout(SLOT, max_align)
    assert t.magic_off == SLOT - 16
    assert (t.image_ok_off, t.copy_done_off, t.swap_info_off, t.swap_size_off) == (
        image_ok,
        copy_done,
        swap_info,
        swap_size,
    )


def test_magic_variants() -> None:
    assert mb.boot_magic(8).hex() == "77c295f360d2ef7f3552500f2cb67980"
    assert mb.boot_magic(32).hex() == "2000" + "2de15d29410b8d77679c110f1f8a"


@pytest.mark.parametrize("max_align", [8, 16, 32])
@pytest.mark.parametrize("write_size", [1, 4, 8])
def test_pending_writes_exact_bytes(max_align: int, write_size: int) -> None:
    a = area(write_size)
    mb.set_pending(a, permanent=True, image_num=0, max_align=max_align)
    t = mb.TrailerLayout(SLOT, max_align)
    raw = a.read(0, SLOT)
    assert raw[t.magic_off :] == mb.boot_magic(max_align)
    assert raw[t.image_ok_off] == 0x01
    assert raw[t.swap_info_off] == mb.SWAP_PERM
    assert raw[t.copy_done_off] == 0xFF
    st = mb.read_swap_state(a, max_align)
    assert st.as_tuple() == (mb.MAGIC_GOOD, mb.SWAP_PERM, 0, mb.FLAG_UNSET, mb.FLAG_SET)
    # Everything except the three fields is still erased.
    touched = set(range(t.magic_off, SLOT)) | {t.image_ok_off, t.swap_info_off}
    assert all(b == 0xFF for i, b in enumerate(raw) if i not in touched)


def test_set_pending_is_idempotent_and_counts_ops() -> None:
    a = area()
    ops0 = a.flash.ops
    mb.set_pending(a, permanent=False)
    assert a.flash.ops - ops0 == 2  # magic, swap_info
    mb.set_pending(a, permanent=False)  # magic already GOOD: writes nothing
    assert a.flash.ops - ops0 == 2


def test_set_pending_refuses_a_bad_magic() -> None:
    a = area()
    a.write(SLOT - 16, b"\x00" * 16)
    with pytest.raises(mb.McubootError, match="bad magic"):
        mb.set_pending(a)


def test_set_confirmed_rules() -> None:
    a = area()
    mb.set_confirmed(a)  # magic UNSET: nothing to do (image was flashed directly)
    assert a.flash.ops == 0
    mb.write_magic(a)
    mb.set_confirmed(a)
    assert mb.read_swap_state(a).image_ok == mb.FLAG_SET
    ops = a.flash.ops
    mb.set_confirmed(a)  # already confirmed: no write (no rewrite without erase)
    assert a.flash.ops == ops


def test_flags_other_than_one_are_bad_and_swap_info_out_of_range_is_none() -> None:
    a = area()
    t = mb.TrailerLayout(SLOT)
    a.write(t.image_ok_off, b"\x02" + b"\xff" * 7)
    a.write(t.swap_info_off, b"\x07" + b"\xff" * 7)
    st = mb.read_swap_state(a)
    assert st.image_ok == mb.FLAG_BAD
    assert st.swap_type == mb.SWAP_NONE


def test_writes_respect_nor_rules() -> None:
    a = area()
    mb.write_image_ok(a)
    with pytest.raises(FlashError):
        mb.write_image_ok(a)


def _dumpinfo(tmp_path: Path, raw: bytes, image: bytes) -> dict[str, Any]:
    path = tmp_path / "slot.bin"
    path.write_bytes(image + raw[len(image) :])
    out = tmp_path / "info.json"
    proc = subprocess.run(
        [sys.executable, "-m", "imgtool.main", "dumpinfo", "-f", "json", "-o", str(out), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _find_trailer(doc: Any) -> dict[str, Any]:
    if isinstance(doc, dict):
        if "image_ok" in doc or ("magic" in doc and "swap_info" in doc):
            return doc
        for v in doc.values():
            found = _find_trailer(v)
            if found:
                return found
    if isinstance(doc, list):
        for v in doc:
            found = _find_trailer(v)
            if found:
                return found
    return {}


def _as_int(value: Any) -> int:
    return int(value, 0) if isinstance(value, str) else int(value)


def _after_swap(a: FlashArea, m: int, swap_type: int, confirm: bool) -> None:
    """What a finished swap leaves in the primary: swap_info, size, magic, copy_done."""
    mb.write_swap_info(a, swap_type, 0, m)
    mb.write_swap_size(a, 0x1234, m)
    if swap_type == mb.SWAP_REVERT:
        mb.write_image_ok(a, m)
    mb.write_magic(a, m)
    mb.write_copy_done(a, m)
    if confirm:
        mb.set_confirmed(a, m)


STATES: dict[str, Callable[[FlashArea, int], object]] = {
    "pending test": lambda a, m: mb.set_pending(a, False, 0, m),
    "pending permanent": lambda a, m: mb.set_pending(a, True, 0, m),
    "test swap done": lambda a, m: _after_swap(a, m, mb.SWAP_TEST, False),
    "confirmed after swap": lambda a, m: _after_swap(a, m, mb.SWAP_TEST, True),
    "revert done": lambda a, m: _after_swap(a, m, mb.SWAP_REVERT, False),
}


@pytest.mark.parametrize("max_align", [8, 32])
@pytest.mark.parametrize("state", sorted(STATES))
def test_imgtool_dumpinfo_agrees(
    tmp_path: Path, tiny_pair: tuple[bytes, bytes], state: str, max_align: int
) -> None:
    a = area(8)
    STATES[state](a, max_align)
    raw = a.read(0, SLOT)
    ours = mb.read_swap_state(a, max_align)
    trailer = _find_trailer(_dumpinfo(tmp_path, raw, tiny_pair[0]))
    assert trailer, "imgtool dumpinfo reported no trailer"
    magic = trailer["magic"]
    magic_bytes = (
        bytes(magic)
        if isinstance(magic, list)
        else bytes.fromhex(str(magic).replace("0x", "").replace(" ", ""))
    )
    assert magic_bytes == mb.boot_magic(max_align)
    t = mb.TrailerLayout(SLOT, max_align)
    assert _as_int(trailer["image_ok"]) == raw[t.image_ok_off]
    assert _as_int(trailer["copy_done"]) == raw[t.copy_done_off]
    assert _as_int(trailer["swap_info"]) == raw[t.swap_info_off]
    assert (raw[t.image_ok_off] == 1) == (ours.image_ok == mb.FLAG_SET)
    assert (raw[t.copy_done_off] == 1) == (ours.copy_done == mb.FLAG_SET)
