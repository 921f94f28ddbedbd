"""The image group's erase and slot info (mcu/img_mgmt.py) against Zephyr's rules, on RAM flash.

Erase follows img_mgmt_erase: a slot in use (pending, or the revert target) is refused.
Requests go through SmpServer.handle as the bytes smpclient sends, and group errors are read
back as SMPv2 {"err": {"group": 1, "rc": ...}} maps.
"""

from __future__ import annotations

import img_mgmt_kit
from img_mgmt_kit import Device, Imgs, state_none, state_revert, state_test
from smp.image_management import IMG_MGMT_ERR as ERR
from smpclient.requests.image_management import ImageErase, ImageUploadWrite

from bootloader.formats.layout import Layout

imgs = img_mgmt_kit.imgs  # the kit's fixture, bound here for pytest to find


# -- erase and slot info ------------------------------------------------------------------


def test_erase_rules(tiny: Layout, imgs: Imgs) -> None:
    dev = state_test(tiny, imgs)
    assert dev.err(ImageErase(slot=1)) == ERR.NO_FREE_SLOT
    assert dev.err(ImageErase(slot=0)) == ERR.NO_FREE_SLOT
    assert dev.err(ImageErase(slot=2)) == ERR.INVALID_SLOT
    assert dev.err(ImageErase(slot=1)) == ERR.NO_FREE_SLOT
    assert dev.err(ImageErase()) == ERR.NO_FREE_SLOT
    assert state_revert(tiny, imgs).err(ImageErase()) == ERR.NO_FREE_SLOT

    dev = state_none(tiny, imgs)
    dev.ok(ImageUploadWrite(off=0, data=imgs.v3[:64], len=len(imgs.v3)))
    assert dev.ok(ImageErase()) == {}
    assert dev.secondary.read(0, dev.secondary.size) == b"\xff" * dev.secondary.size
    assert list(dev.slots()) == [0]
    # The erase ended the upload session too.
    assert dev.ok(ImageUploadWrite(off=64, data=imgs.v3[64:128])) == {"off": 0}


def test_slot_info(tiny: Layout, imgs: Imgs) -> None:
    image = Device(tiny, imgs.v1).slot_info()
    assert [s["size"] for s in image["slots"]] == [tiny.slot0.size, tiny.slot1.size]
    # swap-move: the secondary less its trailer's sector (the primary also has a spare one)
    assert image["max_image_size"] == tiny.slot1.size - tiny.sector_size
