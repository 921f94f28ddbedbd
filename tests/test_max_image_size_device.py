"""The largest image a slot holds, on the device side: the receiver, the bootloader model and
direct mode (``mcu.fota``).

For every board layout in each MCUboot mode its slots allow, an image of exactly the limit
is accepted, and one byte more refused with a message a person can act on.  The limit is
MCUboot's, computed from its text in max_image_kit, independently of
``mcu.mcuboot.max_image_size``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import max_image_kit
import pytest
from max_image_kit import (
    CHUNK,
    IDS,
    VARIANTS,
    Case,
    Receiver,
    boots,
    by_case,
    new_flash,
    write_image,
)
from smp.image_management import IMG_MGMT_ERR as ERR

from bootloader.sim.flash import Flash
from bootloader.sim.model.boot import boot
from mcu import fota
from mcu import mcuboot as mb

# the kit's fixtures, bound here for pytest to find
layout_dir = max_image_kit.layout_dir
case = max_image_kit.case


# -- the receiver --------------------------------------------------------------------------


@by_case()
def test_the_receiver_takes_the_largest_image_and_refuses_one_byte_more(case: Case) -> None:
    f = new_flash(case)
    rx = Receiver(case, f)
    assert rx.slot_info()["images"][0]["max_image_size"] == case.limit
    refused = rx.upload(case.over)
    assert refused == {"err": {"group": 1, "rc": ERR.INVALID_IMAGE_TOO_LARGE}}
    done = rx.upload(case.at_limit)
    assert (done["off"], done.get("match")) == (case.limit, True)
    mb.set_pending(f.area(case.layout.slot1), False, 0, case.layout.max_align)
    boots(f, case, "2.0.0")


@pytest.mark.parametrize(
    "case",
    [v for v in VARIANTS if v[1] == "swap-move"],
    indirect=True,
    ids=[i for i in IDS if i.endswith("-swap-move")],
)
def test_the_bootloader_refuses_an_image_one_byte_over(case: Case) -> None:
    """bootutil_img_validate: an image whose TLVs end past the limit is not valid; the
    secondary is erased and the running image stays."""
    f = new_flash(case)
    write_image(f, case.layout.slot1, case.over, case.layout)
    mb.set_pending(f.area(case.layout.slot1), False, 0, case.layout.max_align)
    r = boot(f, case.layout)
    assert r.swap_type == "none"
    assert r.booted is not None and r.booted.version == "1.0.0"
    assert any(f"more than the {case.limit} bytes" in line for line in r.log), r.log
    sec = f.area(case.layout.slot1)
    assert sec.read(0, 64) == bytes([case.layout.erased_val]) * 64


# -- direct mode ---------------------------------------------------------------------------


class Response:
    def __init__(self, body: bytes) -> None:
        self.status_code = 200
        self.headers = {"content-length": str(len(body))}
        self._body = body

    def iter_content(self, chunk_size: int = 1) -> Any:
        for off in range(0, len(self._body), chunk_size):
            yield self._body[off : off + chunk_size]

    def close(self) -> None:
        pass


class Session:
    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}

    def get(self, url: str, stream: bool = False, timeout: float = 60) -> Response:
        return Response(self.routes[url])


def direct_setup(c: Case, f: Flash, session: Session) -> Any:
    lay = c.layout
    return fota.setup(
        f.area(lay.slot0),
        f.area(lay.slot1),
        requests_session=session,
        reset_fn=lambda: None,
        max_align=lay.max_align,
        trailer_size=lay.trailer_size(),
        mode=lay.mode,
        chunk_size=CHUNK,
        log=lambda msg: None,
    )


def doc(url: str, img: bytes, size: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {"operation": "fota", "url": url, "version": "2.0.0"}
    d["sha256"] = hashlib.sha256(img).hexdigest()
    if size:
        d["size"] = len(img)
    return d


@by_case()
def test_direct_mode_takes_the_largest_image_and_refuses_one_byte_more(case: Case) -> None:
    f = new_flash(case)
    session = Session()
    session.routes["https://fw.example/at.img"] = case.at_limit
    session.routes["https://fw.example/over.img"] = case.over
    cfg = direct_setup(case, f, session)
    assert cfg.max_image_size == case.limit
    over = doc("https://fw.example/over.img", case.over)
    assert fota.update(over) is False
    assert fota.last_reason == (
        f"the image ({case.limit + 1} bytes) does not fit: the slot holds at most "
        f"{case.limit} bytes"
    )
    assert fota.update(doc("https://fw.example/over.img", case.over, size=False)) is False
    assert fota.last_reason == f"image download: more than the {case.limit} bytes the slot holds"
    at = doc("https://fw.example/at.img", case.at_limit)
    assert fota.update(at) is True, fota.last_reason
    assert fota.test(at) is True, fota.last_reason
    boots(f, case, "2.0.0")
