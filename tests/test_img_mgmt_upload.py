"""The image group's upload (mcu/img_mgmt.py) against Zephyr's rules, on RAM flash.

Upload follows img_mgmt_upload_inspect's checks in their order; the upload session, its
resume by sha and its end, and an upload cut by a reset.  Devices are built with
CONFIG_MCUMGR_GRP_IMG_ALLOW_ERASE_PENDING=n (Zephyr's default) unless a test says otherwise.
Requests go through SmpServer.handle as the bytes smpclient sends, and group errors are read
back as SMPv2 {"err": {"group": 1, "rc": ...}} maps.
"""

from __future__ import annotations

from hashlib import sha256

import cbor2
import img_mgmt_kit
from hypothesis import given, settings
from hypothesis import strategies as st
from img_mgmt_kit import Device, Imgs, state_perm, state_revert, state_test
from smp.image_management import IMG_MGMT_ERR as ERR
from smpclient.requests.image_management import ImageErase, ImageStatesWrite, ImageUploadWrite

from bootloader.formats.layout import Layout
from mcu import smp_frame as sf
from mcu.receiver import make_server

imgs = img_mgmt_kit.imgs  # the kit's fixture, bound here for pytest to find


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
