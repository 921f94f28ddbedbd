"""The largest image a slot holds, in the board layouts: MCUboot's limit, and imgtool's.

For every board layout in each MCUboot mode its slots allow, the layout's
``max_image_size()`` is the limit computed from MCUboot's text (max_image_kit), and imgtool's
``--pad`` trailer check, a second oracle, pads an image of exactly the limit into the slot.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import max_image_kit
from max_image_kit import HASH_TLVS, Case, by_case

from bootloader.sim.testimages import payload

# the kit's fixtures, bound here for pytest to find
layout_dir = max_image_kit.layout_dir
case = max_image_kit.case


# -- the layouts ---------------------------------------------------------------------------


@by_case()
def test_the_layout_limit_is_mcuboots(case: Case) -> None:
    assert case.layout.max_image_size() == case.limit


@by_case()
def test_imgtool_pads_an_image_at_the_limit_into_the_slot(case: Case, tmp_path: Path) -> None:
    """imgtool sign --pad refuses an image whose trailer would not fit; at our limit it fits.

    For swap-using-move imgtool's trailer (--max-sectors, --align, --max-align) is
    boot_trailer_sz byte for byte: the largest image it pads is slot - trailer, and ours is
    that less MCUboot's sector rounding.  (Its --overwrite-only trailer is image_ok, copy_done
    and magic only, 8 bytes smaller than MCUboot's reservation, so it pads a little more.)
    """
    lay = case.layout
    args = [sys.executable, "-m", "imgtool.main", "sign", "--pad-header", "--pad"]
    args += ["--version", "2.0.0", *lay.imgtool_args()]

    def pad(total: int) -> subprocess.CompletedProcess[str]:
        src = tmp_path / "in.bin"
        src.write_bytes(payload(total - lay.header_size - HASH_TLVS, "pad"))
        return subprocess.run(
            [*args, str(src), str(tmp_path / "out.bin")],
            capture_output=True,
            text=True,
            check=False,
        )

    assert pad(case.limit).returncode == 0
    assert (tmp_path / "out.bin").stat().st_size == lay.slot1.size
    if lay.mode == "swap-move":
        trailer = lay.max_sectors * 3 * lay.write_size + 4 * lay.max_align + 16
        assert pad(lay.slot1.size - trailer).returncode == 0
        refused = pad(lay.slot1.size - trailer + 1)
        assert refused.returncode != 0 and "exceeds requested size" in refused.stderr
        assert case.limit <= lay.slot1.size - trailer
