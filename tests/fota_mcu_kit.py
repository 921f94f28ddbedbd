"""What the CPython tests of direct mode's device code share: the images, and one simulated
board (the NOR flash model with v1.0.0 running, an MQTT client answered by the local job
store, an HTTP session, the MCUboot model for the reboots).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fota_direct_kit import (
    THING,
    FakeJobsBroker,
    FakeMqtt,
    FakeSession,
    firmware,
    layout,
    native_doc,
    new_flash,
    seed_doc,
)

from bootloader.formats.layout import Layout
from bootloader.sim.flash import Flash
from bootloader.sim.model.boot import boot
from localjobs.store import JobStore
from mcu import fota, jobs
from mcu import mcuboot as mb

URL = "https://images.example.com/fw/app-1.1.0.bin?X-Amz-Signature=secret"


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    return {"1.0.0": firmware("1.0.0"), "1.1.0": firmware("1.1.0", 1800)}


class Device:
    """One simulated board: flash with v1.0.0 running, an MQTT link, an HTTP session."""

    def __init__(self, tmp: Path, images: dict[str, bytes]) -> None:
        self.layout: Layout = layout()
        self.images = images
        self.flash: Flash = new_flash(self.layout, None, images["1.0.0"])
        self.store = JobStore(tmp / "jobs.db")
        self.broker = FakeJobsBroker(self.store)
        self.session = FakeSession()
        self.resets = 0
        self.power_on()

    def power_on(self) -> None:
        """New objects on the same flash: what the firmware builds after a reset."""
        self.mqtt = FakeMqtt(self.broker)
        self.jobs = jobs.Jobs(self.mqtt, THING, timeout_s=2)
        self.pri = self.flash.area(self.layout.slot0)
        self.sec = self.flash.area(self.layout.slot1)
        fota.setup(
            self.pri,
            self.sec,
            requests_session=self.session,
            reset_fn=self.reset,
            max_align=self.layout.max_align,
            trailer_size=self.layout.trailer_size(),
            log=lambda _msg: None,
        )

    def reset(self) -> None:
        self.resets += 1

    def reboot(self) -> str:
        """MCUboot runs, then the firmware starts again; returns the running version."""
        result = boot(self.flash, self.layout)
        assert result.booted is not None, result.panic
        self.power_on()
        return result.booted.version

    def create(self, job_id: str, doc: Any) -> None:
        text = doc if isinstance(doc, str) else json.dumps(doc)
        self.store.create_job(job_id, [THING], text)

    def execution(self, job_id: str) -> dict[str, Any]:
        job = self.store.describe(job_id)
        (e,) = [x for x in job.executions if x.thing_name == THING]  # type: ignore[attr-defined]
        return {"status": e.status, "details": dict(e.status_details)}

    def serve_v11(self, doc_kind: str = "native") -> dict[str, Any]:
        img = self.images["1.1.0"]
        self.session.serve(URL, img)
        if doc_kind == "seed":
            return seed_doc(URL, img)
        return native_doc(URL, img, "1.1.0")


@pytest.fixture
def dev(tmp_path: Path, images: dict[str, bytes]) -> Iterator[Device]:
    d = Device(tmp_path, images)
    yield d
    d.store.close()


def secondary_unmarked(dev: Device) -> bool:
    st_ = mb.read_swap_state(dev.sec, dev.layout.max_align)
    return st_.magic == mb.MAGIC_UNSET and mb.swap_type(dev.pri, dev.sec) == mb.SWAP_NONE
