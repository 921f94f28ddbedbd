"""The image group (mcu/img_mgmt.py) against Zephyr's rules, on RAM flash.

Devices are built with CONFIG_MCUMGR_GRP_IMG_ALLOW_ERASE_PENDING=n (Zephyr's default) unless
a test says otherwise; with it, img_mgmt_slot_in_use lets a slot pending for test or a
permanent swap be erased or overwritten, while a revert slot stays refused.

State write follows img_mgmt_set_next_boot_slot's table (per next-boot type: NORMAL, TEST,
REVERT), upload follows img_mgmt_upload_inspect's checks in their order, erase follows
img_mgmt_erase.  Requests go through SmpServer.handle as the bytes smpclient sends, and
group errors are read back as SMPv2 {"err": {"group": 1, "rc": ...}} maps.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any, Final

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smp.image_management import IMG_MGMT_ERR as ERR
from smpclient.requests.image_management import (
    ImageErase,
    ImageStatesRead,
    ImageStatesWrite,
    ImageUploadWrite,
)

from bootloader.formats.image import parse_image
from bootloader.formats.layout import Layout
from bootloader.sim.testimages import payload, sign
from mcu import mcuboot as mb
from mcu import smp_frame as sf
from mcu.flash_area import RamArea
from mcu.receiver import make_server

GROUP_IMAGE: Final = 1


class Device:
    """Two RAM slots shaped like the tiny board, the running image in the primary."""

    def __init__(
        self, layout: Layout, running: bytes | None, allow_erase_pending: bool = False
    ) -> None:
        self.layout = layout
        self.primary = RamArea(layout.slot0.size, layout.sector_size, layout.write_size)
        self.secondary = RamArea(layout.slot1.size, layout.sector_size, layout.write_size)
        if running is not None:
            self.program(self.primary, running)
        self.server = make_server(
            self.primary,
            self.secondary,
            lambda: None,
            layout.max_align,
            layout.trailer_size(),
            layout.mode,
            allow_erase_pending=allow_erase_pending,
        )

    def program(self, area: RamArea, image: bytes) -> None:
        area.write(0, image + b"\xff" * (-len(image) % area.write_size))

    @property
    def ops(self) -> int:
        return self.primary.ops + self.secondary.ops

    def call(self, request: Any) -> dict[str, Any]:
        reply = self.server.handle(request.BYTES)
        assert reply is not None
        head = request.header
        assert sf.unpack_header(reply)[4:7] == (head.group_id, head.sequence, head.command_id)
        value = cbor2.loads(reply[sf.HEADER_SIZE :])
        assert isinstance(value, dict)
        return value

    def ok(self, request: Any) -> dict[str, Any]:
        rsp = self.call(request)
        assert "err" not in rsp and "rc" not in rsp, rsp
        return rsp

    def err(self, request: Any) -> int:
        rsp = self.call(request)
        assert set(rsp) == {"err"}, rsp
        assert rsp["err"]["group"] == GROUP_IMAGE
        return int(rsp["err"]["rc"])

    def slot_info(self) -> dict[str, Any]:
        """Slot info (id 6), which smpclient has no request class for."""
        body = cbor2.dumps({})
        packet = sf.pack_header(sf.OP_READ, sf.VERSION_2, 0, len(body), GROUP_IMAGE, 3, 6)
        reply = self.server.handle(packet + body)
        assert reply is not None
        (image,) = cbor2.loads(reply[sf.HEADER_SIZE :])["images"]
        assert isinstance(image, dict)
        return image

    def slots(self) -> dict[int, dict[str, Any]]:
        return {s["slot"]: s for s in self.ok(ImageStatesRead())["images"]}

    def upload(self, image: bytes, chunk: int = 512, sha: bool = True) -> dict[str, Any]:
        first = ImageUploadWrite(
            off=0, data=image[:chunk], len=len(image), sha=sha256(image).digest() if sha else None
        )
        rsp = self.ok(first)
        for _ in range(len(image) // chunk + 2):
            off = rsp["off"]
            if off == len(image):
                return rsp
            rsp = self.ok(ImageUploadWrite(off=off, data=image[off : off + chunk]))
        raise AssertionError("upload did not finish")


class Imgs:
    def __init__(self, v1: bytes, v2: bytes, v3: bytes) -> None:
        self.v1, self.v2, self.v3 = v1, v2, v3

    @staticmethod
    def tlv(image: bytes) -> bytes:
        digest = parse_image(image).sha256_tlv
        assert digest is not None
        return digest


@pytest.fixture(scope="module")
def imgs(tiny: Layout, tiny_pair: tuple[bytes, bytes]) -> Imgs:
    return Imgs(*tiny_pair, sign(payload(700, "v3"), "3.0.0", tiny))


# Device states, named after img_mgmt_get_next_boot_slot's (slot, type) for the next boot.


def state_none(tiny: Layout, imgs: Imgs, allow_erase_pending: bool = False) -> Device:
    """Next boot: slot 0, NORMAL.  v1 runs, confirmed; v2 uploaded, not scheduled."""
    dev = Device(tiny, imgs.v1, allow_erase_pending)
    dev.upload(imgs.v2)
    return dev


def state_test(tiny: Layout, imgs: Imgs, allow_erase_pending: bool = False) -> Device:
    """Next boot: slot 1, TEST."""
    dev = state_none(tiny, imgs, allow_erase_pending)
    dev.ok(ImageStatesWrite(hash=Imgs.tlv(imgs.v2)))
    return dev


def state_perm(tiny: Layout, imgs: Imgs, allow_erase_pending: bool = False) -> Device:
    """Next boot: slot 1, NORMAL (a permanent swap is scheduled)."""
    dev = state_none(tiny, imgs, allow_erase_pending)
    dev.ok(ImageStatesWrite(hash=Imgs.tlv(imgs.v2), confirm=True))
    return dev


def state_revert(tiny: Layout, imgs: Imgs, allow_erase_pending: bool = False) -> Device:
    """Next boot: slot 1, REVERT.  v2 runs on trial after a test swap; v1 waits in slot 1."""
    dev = Device(tiny, imgs.v2, allow_erase_pending)
    dev.program(dev.secondary, imgs.v1)
    mb.write_magic(dev.primary)
    mb.write_copy_done(dev.primary)
    return dev


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


# -- upload -------------------------------------------------------------------------------


def test_first_chunk_checks_in_zephyrs_order(tiny: Layout, imgs: Imgs) -> None:
    dev = Device(tiny, imgs.v1)
    ops = dev.ops
    v2 = imgs.v2
    assert dev.err(ImageUploadWrite(off=0, data=v2[:31], len=len(v2))) == ERR.INVALID_IMAGE_HEADER
    assert dev.err(ImageUploadWrite(off=0, data=v2[:64])) == ERR.INVALID_LENGTH
    bad_magic = b"\x00" + v2[1:64]
    assert dev.err(ImageUploadWrite(off=0, data=bad_magic, len=len(v2))) == (
        ERR.INVALID_IMAGE_HEADER_MAGIC
    )
    assert dev.err(ImageUploadWrite(off=0, data=v2[:64], len=len(v2), sha=bytes(33))) == (
        ERR.INVALID_HASH
    )
    too_big = dev.slot_info()["max_image_size"] + 1
    assert dev.err(ImageUploadWrite(off=0, data=v2[:64], len=too_big)) == (
        ERR.INVALID_IMAGE_TOO_LARGE
    )
    no_off = cbor2.dumps({"data": v2[:64], "len": len(v2)})
    packet = sf.pack_header(sf.OP_WRITE, sf.VERSION_2, 0, len(no_off), 1, 0, 1) + no_off
    reply = dev.server.handle(packet)
    assert reply is not None
    assert cbor2.loads(reply[8:]) == {"err": {"group": 1, "rc": ERR.INVALID_OFFSET}}
    assert dev.ops == ops  # nothing erased or written


def test_image_number_is_ignored_with_one_updatable_image(tiny: Layout, imgs: Imgs) -> None:
    # smpclient's upload(slot=1), e.g. `smpmgr upgrade --slot 1`, sends image=1.
    dev = Device(tiny, imgs.v1)
    rsp = dev.ok(ImageUploadWrite(off=0, data=imgs.v2[:100], len=len(imgs.v2), image=1))
    assert rsp == {"off": 100}


def test_upload_while_the_running_image_is_unconfirmed(tiny: Layout, imgs: Imgs) -> None:
    dev = state_revert(tiny, imgs)
    first = ImageUploadWrite(off=0, data=imgs.v3[:128], len=len(imgs.v3))
    assert dev.err(first) == ERR.NO_FREE_SLOT
    dev = state_test(tiny, imgs)
    assert dev.err(first) == ERR.NO_FREE_SLOT


def test_allow_erase_pending_overwrites_a_pending_slot_but_never_a_revert_slot(
    tiny: Layout, imgs: Imgs
) -> None:
    first = ImageUploadWrite(off=0, data=imgs.v3[:128], len=len(imgs.v3))
    revert = state_revert(tiny, imgs, allow_erase_pending=True)
    assert revert.err(first) == ERR.NO_FREE_SLOT
    assert revert.err(ImageErase()) == ERR.NO_FREE_SLOT
    for make in (state_test, state_perm):
        dev = make(tiny, imgs, allow_erase_pending=True)
        assert dev.ok(first) == {"off": 128}
        # The upload's erase took the trailer with it: nothing is pending any more.
        assert not any(s.get("pending") for s in dev.slots().values())
        dev = make(tiny, imgs, allow_erase_pending=True)
        assert dev.ok(ImageErase()) == {}
        assert dev.secondary.read(0, dev.secondary.size) == b"\xff" * dev.secondary.size
        assert list(dev.slots()) == [0]


def test_upgrade_only_refuses_older_and_equal_versions(tiny: Layout, imgs: Imgs) -> None:
    dev = Device(tiny, imgs.v2)
    for older in (imgs.v1, imgs.v2):
        request = ImageUploadWrite(off=0, data=older[:128], len=len(older), upgrade=True)
        assert dev.err(request) == ERR.CURRENT_VERSION_IS_NEWER
    # Without `upgrade` a downgrade is accepted; with it a newer version is.
    assert dev.ok(ImageUploadWrite(off=0, data=imgs.v1[:128], len=len(imgs.v1)))["off"] == 128
    newer = ImageUploadWrite(off=0, data=imgs.v3[:128], len=len(imgs.v3), upgrade=True)
    assert dev.ok(newer)["off"] == 128
    empty = Device(tiny, None)
    assert empty.err(newer) == ERR.VERSION_GET_FAILED


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 97), min_size=1, max_size=60), sha=st.booleans())
def test_unaligned_chunks_land_byte_for_byte(
    tiny: Layout, imgs: Imgs, sizes: list[int], sha: bool
) -> None:
    # The flash takes only whole, aligned 8-byte writes to erased flash: chunks of any size
    # must be buffered to the write block and the tail padded on the last one.
    image = imgs.v2
    dev = Device(tiny, imgs.v1)
    first = max(32, sizes[0])
    digest = sha256(image).digest() if sha else None
    rsp = dev.ok(ImageUploadWrite(off=0, data=image[:first], len=len(image), sha=digest))
    i = 1
    while rsp["off"] < len(image):
        off = rsp["off"]
        n = sizes[i % len(sizes)]
        i += 1
        rsp = dev.ok(ImageUploadWrite(off=off, data=image[off : off + n]))
        assert rsp["off"] == min(off + n, len(image))
    assert rsp.get("match") is (True if sha else None)
    written = dev.secondary.read(0, len(image))
    assert written == image
    pad = -len(image) % tiny.write_size
    assert dev.secondary.read(len(image), pad + 8) == b"\xff" * (pad + 8)
    assert dev.slots()[1]["hash"] == Imgs.tlv(image)


def test_wrong_offsets_are_dropped_with_the_expected_offset(tiny: Layout, imgs: Imgs) -> None:
    dev = Device(tiny, imgs.v1)
    v2 = imgs.v2
    dev.ok(ImageUploadWrite(off=0, data=v2[:200], len=len(v2)))
    ops = dev.ops
    for off in (1, 199, 201, 4000):
        assert dev.ok(ImageUploadWrite(off=off, data=v2[off : off + 50])) == {"off": 200}
    assert dev.ops == ops
    no_session = Device(tiny, imgs.v1)
    assert no_session.ok(ImageUploadWrite(off=64, data=v2[64:128])) == {"off": 0}


def test_resume_and_a_new_session(tiny: Layout, imgs: Imgs) -> None:
    dev = Device(tiny, imgs.v1)
    v2, v3 = imgs.v2, imgs.v3
    sha2 = sha256(v2).digest()
    first = ImageUploadWrite(off=0, data=v2[:300], len=len(v2), sha=sha2)
    dev.ok(first)
    dev.ok(ImageUploadWrite(off=300, data=v2[300:700]))
    ops = dev.ops
    assert dev.ok(first) == {"off": 700}  # same sha: resumed, nothing rewritten
    assert dev.ops == ops
    # A different sha starts over.
    rsp = dev.ok(ImageUploadWrite(off=0, data=v3[:100], len=len(v3), sha=sha256(v3).digest()))
    assert rsp == {"off": 100}
    assert dev.ok(ImageUploadWrite(off=700, data=v2[700:800])) == {"off": 100}


def test_a_finished_upload_ends_the_session(tiny: Layout, imgs: Imgs) -> None:
    dev = Device(tiny, imgs.v1)
    v2 = imgs.v2
    assert dev.upload(v2)["match"] is True
    # The same image again: the slot already holds it (the image check) - no flash work.
    ops = dev.ops
    again = ImageUploadWrite(off=0, data=v2[:100], len=len(v2), sha=sha256(v2).digest())
    assert dev.ok(again) == {"off": len(v2), "match": True}
    assert dev.ops == ops
    # Scheduled, it may no longer be overwritten.
    dev.ok(ImageStatesWrite(hash=Imgs.tlv(v2)))
    assert dev.err(again) == ERR.NO_FREE_SLOT


def test_an_error_ends_the_session(tiny: Layout, imgs: Imgs) -> None:
    dev = Device(tiny, imgs.v1)
    v2 = imgs.v2
    sha = sha256(v2).digest()
    dev.ok(ImageUploadWrite(off=0, data=v2[:64], len=100, sha=sha))
    assert dev.err(ImageUploadWrite(off=64, data=v2[64:128])) == ERR.INVALID_IMAGE_DATA_OVERRUN
    assert dev.ok(ImageUploadWrite(off=64, data=v2[64:100])) == {"off": 0}


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


def _reboot(dev: Device) -> Device:
    """A reset: RAM (the upload session) is lost, the flash is kept."""
    new = Device(dev.layout, None)
    new.primary, new.secondary = dev.primary, dev.secondary
    new.server = make_server(
        dev.primary,
        dev.secondary,
        lambda: None,
        dev.layout.max_align,
        dev.layout.trailer_size(),
        dev.layout.mode,
    )
    return new


def test_an_upload_cut_by_a_reset_resumes_from_flash(tiny: Layout, imgs: Imgs) -> None:
    dev = Device(tiny, imgs.v1)
    image, chunk = imgs.v2, 500
    digest = sha256(image).digest()
    rsp = dev.ok(ImageUploadWrite(off=0, data=image[:chunk], len=len(image), sha=digest))
    for _ in range(2):
        off = rsp["off"]
        rsp = dev.ok(ImageUploadWrite(off=off, data=image[off : off + chunk]))
    written = rsp["off"]
    dev = _reboot(dev)
    rsp = dev.ok(ImageUploadWrite(off=0, data=image[:chunk], len=len(image), sha=digest))
    resumed = rsp["off"]
    ws = tiny.write_size
    assert chunk < resumed <= written and resumed % ws == 0
    assert written - resumed < ws  # only the unflushed tail is lost
    for _ in range(len(image) // chunk + 2):
        off = rsp["off"]
        if off == len(image):
            break
        rsp = dev.ok(ImageUploadWrite(off=off, data=image[off : off + chunk]))
    assert rsp == {"off": len(image), "match": True}
    assert dev.secondary.read(0, len(image)) == image


def test_a_different_image_after_a_reset_starts_over(tiny: Layout, imgs: Imgs) -> None:
    dev = Device(tiny, imgs.v1)
    first = imgs.v2
    dev.ok(ImageUploadWrite(off=0, data=first[:500], len=len(first), sha=sha256(first).digest()))
    dev = _reboot(dev)
    other = imgs.v3
    rsp = dev.ok(
        ImageUploadWrite(off=0, data=other[:500], len=len(other), sha=sha256(other).digest())
    )
    assert rsp["off"] == 500  # a fresh session: the first chunk was taken, nothing resumed
