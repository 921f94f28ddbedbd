"""Direct mode's device code (mcu.fota, mcu.jobs) on CPython, the whole flow: a job is
fetched, downloaded, checked, written, tested and confirmed, or fails, reverts or is refused,
against fakes: an MQTT client answered by the local job store, an HTTP session, the NOR flash
model and the MCUboot model for the reboots.  The same flows against mosquitto, the jobs
service and a real HTTPS server are in test_fota_direct.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fota_direct_kit import (
    THING,
    FakeMqtt,
    image_hash,
    native_doc,
    seed_doc,
)
from fota_mcu_kit import URL, Device, secondary_unmarked
from fota_mcu_kit import dev as dev
from fota_mcu_kit import images as images

from mcu import fota, jobs
from mcu import mcuboot as mb

# -- the flow ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["native", "seed"])
def test_update_reboot_confirm_succeeds(dev: Device, kind: str) -> None:
    dev.create("fw-1", dev.serve_v11(kind))
    assert fota.handle_fota_jobs(dev.jobs, force=True) is True
    assert dev.resets == 1
    ex = dev.execution("fw-1")
    assert ex["status"] == "IN_PROGRESS"
    assert ex["details"]["phase"] == "testing"
    assert ex["details"]["hash"] == image_hash(dev.images["1.1.0"])
    assert ex["details"]["version"] == "1.1.0"
    assert URL not in json.dumps(ex)
    assert mb.swap_type(dev.pri, dev.sec) == mb.SWAP_TEST

    assert dev.reboot() == "1.1.0"
    assert not fota.bootutil.is_confirmed(dev.pri)
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    ex = dev.execution("fw-1")
    assert ex["status"] == "SUCCEEDED"
    assert ex["details"]["phase"] == "confirmed"
    assert fota.bootutil.is_confirmed(dev.pri)
    assert dev.reboot() == "1.1.0"  # confirmed: no revert
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    assert dev.resets == 1


def test_unconfirmed_image_reverts_and_fails(dev: Device) -> None:
    dev.create("fw-1", dev.serve_v11())
    assert fota.handle_fota_jobs(dev.jobs, force=True)
    assert dev.reboot() == "1.1.0"  # the new firmware dies before it gets to confirm
    assert dev.reboot() == "1.0.0"  # MCUboot reverts
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    ex = dev.execution("fw-1")
    assert ex["status"] == "FAILED"
    assert ex["details"]["reason"].startswith("reverted to 1.0.0")


def test_bad_md5_fails_and_marks_nothing(dev: Device) -> None:
    img = dev.images["1.1.0"]
    dev.session.serve(URL, img)
    dev.create("fw-1", seed_doc(URL, img, md5="0" * 32))
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    assert dev.resets == 0
    ex = dev.execution("fw-1")
    assert ex["status"] == "FAILED"
    assert "MD5 mismatch" in ex["details"]["reason"]
    assert ex["details"]["phase"] == "verifying"
    assert secondary_unmarked(dev)
    assert dev.reboot() == "1.0.0"


def test_auto_reset_false_returns_true_until_reset(dev: Device) -> None:
    dev.create("fw-1", dev.serve_v11())
    assert fota.handle_fota_jobs(dev.jobs, force=True, auto_reset=False) is True
    assert dev.resets == 0
    # Called again before the reset: the swap is still ahead, nothing is FAILED.
    assert fota.handle_fota_jobs(dev.jobs, force=True, auto_reset=False) is True
    assert dev.execution("fw-1")["status"] == "IN_PROGRESS"
    assert dev.reboot() == "1.1.0"
    assert fota.handle_fota_jobs(dev.jobs, force=True, auto_reset=False) is False
    assert dev.execution("fw-1")["status"] == "SUCCEEDED"


def test_non_fota_job_goes_to_the_callback(dev: Device) -> None:
    dev.create("reboot-1", {"operation": "reboot", "delay_s": 3})
    seen: list[jobs.Job] = []

    def cbk(job: jobs.Job) -> None:
        seen.append(job)
        assert job.update(jobs.SUCCEEDED, {"note": "rebooted"})

    assert fota.handle_fota_jobs(dev.jobs, force=True, job_cbk=cbk) is False
    assert [j.jobid for j in seen] == ["reboot-1"]
    assert seen[0].document == {"operation": "reboot", "delay_s": 3}
    assert dev.execution("reboot-1")["status"] == "SUCCEEDED"


def test_non_fota_job_without_callback_is_rejected(dev: Device) -> None:
    dev.create("other-1", {"hello": "world"})
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    ex = dev.execution("other-1")
    assert ex["status"] == "REJECTED"
    assert "not a firmware update" in ex["details"]["reason"]


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"operation": "fota", "url": "https://h/x", "size": 10}, "sha256"),
        ({"bc_url": "http://h/x", "bc_crc": "0" * 32, "bc_size": 5}, "https"),
        ({"operation": "fota", "url": "https://h/x", "md5": "0" * 32, "signed": False}, "raw"),
        ({"operation": "fota", "url": "https://h/x", "md5": "0" * 32, "size": 10**6}, "fit"),
        ({"operation": "fota", "url": "https://h/x", "md5": "0" * 32, "image": 1}, "image 1"),
        ({"url": "https://h/x", "bc_url": "https://h/x"}, "mixes"),
    ],
)
def test_unusable_documents_are_rejected(dev: Device, doc: dict[str, Any], reason: str) -> None:
    dev.create("bad-1", doc)
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    ex = dev.execution("bad-1")
    assert ex["status"] == "REJECTED"
    assert reason in ex["details"]["reason"]
    assert secondary_unmarked(dev)


@pytest.mark.parametrize(
    ("serve", "reason"),
    [
        ({"status": 403}, "HTTP 403"),
        ({"length": 5}, "the server has 5 bytes"),
        ({"truncate": 100}, "image download: got "),
        ({"url": "https://elsewhere.example.com/x"}, "download failed"),
    ],
)
def test_download_problems_fail_the_job(dev: Device, serve: dict[str, Any], reason: str) -> None:
    img = dev.images["1.1.0"]
    doc = native_doc(URL, img, "1.1.0")
    body = img[: -serve["truncate"]] if "truncate" in serve else img
    length = len(img) if "truncate" in serve else serve.get("length")
    if "url" in serve:
        doc["url"] = serve["url"]
    else:
        dev.session.serve(URL, body, serve.get("status", 200), length)
    dev.create("fw-1", doc)
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    ex = dev.execution("fw-1")
    assert ex["status"] == "FAILED", ex
    assert reason in ex["details"]["reason"]
    assert "secret" not in json.dumps(ex)
    assert secondary_unmarked(dev)
    for resp in dev.session.responses:
        assert resp.closed
        if "truncate" not in serve:  # a refused or unread response's connection is dropped
            assert resp.raw_socket is not None and resp.raw_socket.closed


def test_connection_lost_mid_download_fails_the_job(dev: Device) -> None:
    dev.session.fail_after = 1000
    dev.create("fw-1", dev.serve_v11())
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    ex = dev.execution("fw-1")
    assert ex["status"] == "FAILED"
    assert ex["details"]["reason"].startswith("image download failed after ")
    assert "ECONNRESET" in ex["details"]["reason"]
    assert dev.session.responses[0].raw_socket.closed  # type: ignore[union-attr]
    assert secondary_unmarked(dev)


class BrokenFlash:
    """The secondary slot, with a flash driver that fails (as a board's raises OSError)."""

    def __init__(self, area: Any, fail_at: int) -> None:
        self.area = area
        self.fail_at = fail_at
        for name in ("size", "sector_size", "write_size", "erased_val", "read", "erase"):
            setattr(self, name, getattr(area, name))

    def write(self, off: int, data: bytes) -> None:
        if off >= self.fail_at:
            raise OSError(5, "EIO")
        self.area.write(off, data)


def test_flash_write_error_fails_the_job(dev: Device) -> None:
    lay = dev.layout
    fota.setup(
        dev.pri,
        BrokenFlash(dev.sec, 1024),
        requests_session=dev.session,
        reset_fn=dev.reset,
        trailer_size=lay.trailer_size(),
        log=lambda _m: None,
    )
    dev.create("fw-1", dev.serve_v11())
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    ex = dev.execution("fw-1")
    assert ex["status"] == "FAILED"
    assert ex["details"]["reason"].startswith("flash write at 0x400 failed")
    assert secondary_unmarked(dev)


def test_lost_reply_to_the_testing_update_is_checked_before_marking(dev: Device) -> None:
    real = dev.broker.handle
    dropped: list[str] = []

    def lossy(client: FakeMqtt, topic: str, text: str) -> None:
        if json.loads(text).get("statusDetails", {}).get("phase") == "testing" and not dropped:
            dropped.append(topic)
            assert dev.broker.api is not None
            dev.broker.api.handle(topic, text.encode())  # applied, but the reply is lost
            return
        real(client, topic, text)

    dev.broker.handle = lossy  # type: ignore[method-assign]
    dev.create("fw-1", dev.serve_v11())
    assert fota.handle_fota_jobs(dev.jobs, force=True) is True
    assert dropped and mb.swap_type(dev.pri, dev.sec) == mb.SWAP_TEST
    assert dev.reboot() == "1.1.0"
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    assert dev.execution("fw-1")["status"] == "SUCCEEDED"


def test_wrong_version_fails(dev: Device) -> None:
    img = dev.images["1.1.0"]
    dev.session.serve(URL, img)
    dev.create("fw-1", native_doc(URL, img, "2.0.0"))
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    ex = dev.execution("fw-1")
    assert ex["status"] == "FAILED"
    assert "the image is version 1.1.0, the job says 2.0.0" in ex["details"]["reason"]


def test_not_an_mcuboot_image_fails(dev: Device) -> None:
    raw = b"\x01" * 1000
    dev.session.serve(URL, raw)
    dev.create("fw-1", native_doc(URL, raw))
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    ex = dev.execution("fw-1")
    assert ex["status"] == "FAILED"
    assert "not an MCUboot image" in ex["details"]["reason"]
    assert secondary_unmarked(dev)


def test_disconnect_mqtt_during_download(dev: Device) -> None:
    states: list[bool] = []
    dev.session.on_get.append(lambda _url: states.append(dev.mqtt.is_connected()))
    dev.create("fw-1", dev.serve_v11())
    assert fota.handle_fota_jobs(dev.jobs, force=True, disconnect_mqtt=True, auto_reset=False)
    assert states == [False]
    assert dev.mqtt.is_connected()
    assert dev.mqtt.events[-3:] == ["disconnect", "connect", "subscribe"]
    assert set(dev.jobs.filters) <= set(dev.mqtt._subscribed_topics)


def test_keep_mqtt_reports_progress(dev: Device) -> None:
    states: list[bool] = []
    dev.session.on_get.append(lambda _url: states.append(dev.mqtt.is_connected()))
    dev.create("fw-1", dev.serve_v11())
    assert fota.handle_fota_jobs(dev.jobs, force=True, disconnect_mqtt=False, auto_reset=False)
    assert states == [True]
    assert "disconnect" not in dev.mqtt.events
    progress = [
        json.loads(m)["statusDetails"].get("progress")
        for t, m in dev.mqtt.published
        if t.endswith("fw-1/update")
    ]
    size = len(dev.images["1.1.0"])
    assert progress[0] == f"0/{size}"
    assert len([p for p in progress if p and p != f"0/{size}"]) >= 2


def test_other_subscriptions_survive_the_disconnect(dev: Device) -> None:
    dev.mqtt.subscribe("dev/commands")
    dev.create("fw-1", dev.serve_v11())
    assert fota.handle_fota_jobs(dev.jobs, force=True, auto_reset=False)
    assert "dev/commands" in dev.mqtt._subscribed_topics


def test_without_force_only_a_notification_starts_work(dev: Device) -> None:
    dev.create("fw-1", dev.serve_v11())
    assert fota.handle_fota_jobs(dev.jobs, auto_reset=False) is False
    assert dev.execution("fw-1")["status"] == "QUEUED"
    assert not any(t.endswith("/jobs/get") for t, _ in dev.mqtt.published)
    dev.broker.notify_next(dev.mqtt, THING)
    assert fota.handle_fota_jobs(dev.jobs, auto_reset=False) is True
    assert dev.execution("fw-1")["status"] == "IN_PROGRESS"


def test_gives_up_after_repeated_restarts(dev: Device) -> None:
    dev.create("fw-1", dev.serve_v11())
    for attempt in (1, 2, 3):
        # Power is lost during every download: the job stays "downloading".
        dev.session.on_get[:] = [lambda _url: (_ for _ in ()).throw(KeyboardInterrupt)]
        with pytest.raises(KeyboardInterrupt):
            fota.handle_fota_jobs(dev.jobs, force=True, disconnect_mqtt=False)
        ex = dev.execution("fw-1")
        assert (ex["status"], ex["details"]["attempt"]) == ("IN_PROGRESS", str(attempt))
        dev.reboot()
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    ex = dev.execution("fw-1")
    assert ex["status"] == "FAILED"
    assert "gave up after 3 attempts" in ex["details"]["reason"]


def test_two_jobs_in_a_row(dev: Device) -> None:
    dev.create("fw-1", dev.serve_v11())
    dev.create("note-1", {"operation": "note"})
    got: list[str] = []
    assert fota.handle_fota_jobs(dev.jobs, force=True, job_cbk=lambda j: got.append(j.jobid))
    assert dev.reboot() == "1.1.0"
    assert (
        fota.handle_fota_jobs(dev.jobs, force=True, job_cbk=lambda j: got.append(j.jobid)) is False
    )
    assert dev.execution("fw-1")["status"] == "SUCCEEDED"
    assert got == ["note-1"]


def test_canceled_job_is_not_booted(dev: Device) -> None:
    dev.create("fw-1", dev.serve_v11())

    def cancel(_url: str) -> None:
        dev.store.cancel_job("fw-1", force=True)

    dev.session.on_get.append(cancel)
    assert fota.handle_fota_jobs(dev.jobs, force=True) is False
    assert dev.resets == 0
    assert secondary_unmarked(dev)
