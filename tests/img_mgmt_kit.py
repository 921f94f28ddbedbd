"""What the image group tests (mcu/img_mgmt.py) share: a device on RAM flash, its images and
the device states the tests start from.

:class:`Device` holds two RAM slots shaped like the tiny board and an SmpServer built with
CONFIG_MCUMGR_GRP_IMG_ALLOW_ERASE_PENDING=n (Zephyr's default) unless asked otherwise; with
it, img_mgmt_slot_in_use lets a slot pending for test or a permanent swap be erased or
overwritten, while a revert slot stays refused.  Requests go through SmpServer.handle as the
bytes smpclient sends, and group errors are read back as SMPv2
{"err": {"group": 1, "rc": ...}} maps.  The ``state_*`` builders are named after
img_mgmt_get_next_boot_slot's (slot, type) for the next boot.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any, Final

import cbor2
import pytest
from smpclient.requests.image_management import ImageStatesRead, ImageStatesWrite, ImageUploadWrite

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
