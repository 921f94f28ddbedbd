"""The image group's state write (mcu/img_mgmt.py) against Zephyr's rules, on RAM flash.

State write follows img_mgmt_set_next_boot_slot's table (per next-boot type: NORMAL, TEST,
REVERT), from the device states of img_mgmt_kit.  Requests go through SmpServer.handle as the
bytes smpclient sends, and group errors are read back as SMPv2 {"err": {"group": 1, "rc": ...}}
maps.
"""

from __future__ import annotations

from typing import Any

import img_mgmt_kit
import pytest
from img_mgmt_kit import Imgs, state_none, state_perm, state_revert, state_test
from smp.image_management import IMG_MGMT_ERR as ERR
from smpclient.requests.image_management import ImageStatesWrite

from bootloader.formats.layout import Layout
from mcu import mcuboot as mb

imgs = img_mgmt_kit.imgs  # the kit's fixture, bound here for pytest to find


# -- state write --------------------------------------------------------------------------


def test_test_of_the_active_slot_is_denied(tiny: Layout, imgs: Imgs) -> None:
    for make in (state_none, state_test, state_perm):
        dev = make(tiny, imgs)
        err = dev.err(ImageStatesWrite(hash=Imgs.tlv(imgs.v1)))
        assert err == ERR.IMAGE_SETTING_TEST_TO_ACTIVE_DENIED
    dev = state_revert(tiny, imgs)
    err = dev.err(ImageStatesWrite(hash=Imgs.tlv(imgs.v2)))
    assert err == ERR.IMAGE_SETTING_TEST_TO_ACTIVE_DENIED


def test_test_schedules_the_secondary(tiny: Layout, imgs: Imgs) -> None:
    dev = state_none(tiny, imgs)
    rsp = dev.ok(ImageStatesWrite(hash=Imgs.tlv(imgs.v2)))
    states = {s["slot"]: s for s in rsp["images"]}  # the reply is the new state
    assert (states[1]["pending"], states[1]["permanent"], states[1]["confirmed"]) == (
        True,
        False,
        False,
    )
    assert mb.swap_type(dev.primary, dev.secondary) == mb.SWAP_TEST


def test_changing_the_choice_while_a_test_is_pending(tiny: Layout, imgs: Imgs) -> None:
    dev = state_test(tiny, imgs)
    ops = dev.ops
    assert dev.err(ImageStatesWrite(hash=Imgs.tlv(imgs.v2), confirm=True)) == (
        ERR.IMAGE_ALREADY_PENDING
    )
    assert dev.err(ImageStatesWrite(confirm=True)) == ERR.IMAGE_ALREADY_PENDING
    assert dev.ops == ops
    assert mb.swap_type(dev.primary, dev.secondary) == mb.SWAP_TEST


def test_a_permanent_swap_cannot_be_changed(tiny: Layout, imgs: Imgs) -> None:
    dev = state_perm(tiny, imgs)
    assert dev.slots()[1]["permanent"] is True
    assert dev.err(ImageStatesWrite(hash=Imgs.tlv(imgs.v2))) == ERR.IMAGE_ALREADY_PENDING
    assert dev.err(ImageStatesWrite(confirm=True)) == ERR.IMAGE_ALREADY_PENDING
    assert mb.swap_type(dev.primary, dev.secondary) == mb.SWAP_PERM


def test_while_reverting_nothing_can_be_tested(tiny: Layout, imgs: Imgs) -> None:
    dev = state_revert(tiny, imgs)
    assert dev.err(ImageStatesWrite(hash=Imgs.tlv(imgs.v1))) == ERR.IMAGE_ALREADY_PENDING


@pytest.mark.parametrize(
    ("make", "request_of"),
    [
        (state_test, lambda i: ImageStatesWrite(hash=Imgs.tlv(i.v2))),
        (state_perm, lambda i: ImageStatesWrite(hash=Imgs.tlv(i.v2), confirm=True)),
        (state_revert, lambda i: ImageStatesWrite(hash=Imgs.tlv(i.v1), confirm=True)),
        (state_none, lambda i: ImageStatesWrite(confirm=True)),
    ],
    ids=["test-again", "perm-again", "confirm-revert-target", "confirm-confirmed"],
)
def test_repeating_the_same_request_is_a_no_op(
    tiny: Layout, imgs: Imgs, make: Any, request_of: Any
) -> None:
    dev = make(tiny, imgs)
    before = (dev.primary.read(0, dev.primary.size), dev.secondary.read(0, dev.secondary.size))
    dev.ok(request_of(imgs))
    after = (dev.primary.read(0, dev.primary.size), dev.secondary.read(0, dev.secondary.size))
    assert after == before


def test_confirm_without_hash_confirms_the_running_image(tiny: Layout, imgs: Imgs) -> None:
    dev = state_revert(tiny, imgs)
    states = dev.slots()
    assert (states[0]["confirmed"], states[1]["confirmed"]) == (False, True)
    rsp = dev.ok(ImageStatesWrite(confirm=True))
    states = {s["slot"]: s for s in rsp["images"]}
    assert (states[0]["active"], states[0]["confirmed"]) == (True, True)
    assert states[1]["confirmed"] is False
    assert mb.read_swap_state(dev.primary).image_ok == mb.FLAG_SET
    assert mb.swap_type(dev.primary, dev.secondary) == mb.SWAP_NONE


def test_test_without_hash_and_bad_hashes(tiny: Layout, imgs: Imgs) -> None:
    dev = state_none(tiny, imgs)
    assert dev.err(ImageStatesWrite()) == ERR.INVALID_HASH
    assert dev.err(ImageStatesWrite(hash=b"", confirm=False)) == ERR.INVALID_HASH
    assert dev.err(ImageStatesWrite(hash=Imgs.tlv(imgs.v2)[:31])) == ERR.INVALID_HASH
    assert dev.err(ImageStatesWrite(hash=bytes(32))) == ERR.HASH_NOT_FOUND
    assert dev.err(ImageStatesWrite(hash=bytes(32), confirm=True)) == ERR.HASH_NOT_FOUND


def test_a_corrupt_secondary_trailer_is_erased(tiny: Layout, imgs: Imgs) -> None:
    dev = state_none(tiny, imgs)
    magic_off = mb.TrailerLayout(dev.secondary.size).magic_off
    dev.secondary.write(magic_off, b"\x00" * 16)  # neither erased nor the magic: BAD
    err = dev.err(ImageStatesWrite(hash=Imgs.tlv(imgs.v2)))
    assert err == ERR.INVALID_IMAGE_HEADER_MAGIC
    assert dev.secondary.read(0, dev.secondary.size) == b"\xff" * dev.secondary.size
