"""Direct mode's device code (mcu.fota, mcu.jobs, mcu.fota_doc, mcu.md5) on CPython, against
fakes: an MQTT client answered by the local job store, an HTTP session, the NOR flash model and
the MCUboot model for the reboots.  The same flows against mosquitto, the jobs service and a
real HTTPS server are in test_fota_direct.py.
"""

from __future__ import annotations

import hashlib
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
    image_hash,
    layout,
    native_doc,
    new_flash,
    seed_doc,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from bootloader.formats.layout import Layout
from bootloader.sim.flash import Flash
from bootloader.sim.model.boot import boot
from fota_common.errors import DocumentError as HostDocumentError
from host_bridge.jobs.documents import FirmwareJob, OtherJob, parse_document
from localjobs.store import JobStore
from mcu import fota, fota_doc, jobs, md5
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


# -- the seed's primitives ---------------------------------------------------------------------


def test_update_then_test_then_confirm(dev: Device) -> None:
    doc = dev.serve_v11("seed")
    assert fota.update(doc) is True, fota.last_reason
    assert secondary_unmarked(dev)
    assert fota.test(doc) is True, fota.last_reason
    assert mb.swap_type(dev.pri, dev.sec) == mb.SWAP_TEST
    assert dev.reboot() == "1.1.0"
    fota.confirm()
    assert dev.reboot() == "1.1.0"


def test_test_rechecks_the_slot_after_a_restart(dev: Device) -> None:
    doc = dev.serve_v11()
    assert fota.update(doc)
    dev.power_on()  # module state gone: test() hashes the slot again
    assert fota.test(doc), fota.last_reason
    other = dict(doc, sha256="ab" * 32)
    dev2_marked = mb.swap_type(dev.pri, dev.sec)
    assert dev2_marked == mb.SWAP_TEST
    dev.power_on()
    assert fota.test(other) is False
    assert "does not hold the job's image" in (fota.last_reason or "")


def test_update_refused_while_on_trial(dev: Device) -> None:
    doc = dev.serve_v11()
    assert fota.update(doc) and fota.test(doc)
    assert dev.reboot() == "1.1.0"
    assert fota.update(doc) is False
    assert "on trial" in (fota.last_reason or "")


def test_reset_without_a_reset_function() -> None:
    lay = layout()
    flash = Flash.for_layout(lay)
    fota.setup(flash.area(lay.slot0), flash.area(lay.slot1), log=lambda _m: None)
    with pytest.raises(fota.FotaError, match="reset_fn"):
        fota.reset()


def test_setup_is_required() -> None:
    fota._cfg = None
    with pytest.raises(fota.FotaError, match="setup"):
        fota.confirm()


# -- jobs client ---------------------------------------------------------------------------------


def test_jobs_requests_and_reply_matching(dev: Device) -> None:
    dev.create("j1", {"operation": "x"})
    dev.create("j2", {"operation": "y"})
    inp, queued = dev.jobs.pending()
    assert (inp, [s["jobId"] for s in queued]) == ([], ["j1", "j2"])
    job = dev.jobs.start_next({"step": "one"})
    assert job is not None and job.jobid == "j1" and job.status == "IN_PROGRESS"
    assert job.document == {"operation": "x"}
    d = dev.jobs.describe("j1")
    assert d is not None and d.status_details == {"step": "one"}
    assert dev.jobs.describe("nope") is None
    assert dev.jobs.update("j1", "SUCCEEDED", {"n": 1}, expected_version=99) is None
    assert dev.jobs.rejected is not None and dev.jobs.rejected["code"] == "VersionMismatch"
    assert job.update(jobs.SUCCEEDED, {"n": 1})
    assert dev.execution("j1") == {"status": "SUCCEEDED", "details": {"n": "1"}}
    tokens = [json.loads(m)["clientToken"] for _, m in dev.mqtt.published]
    assert len(set(tokens)) == len(tokens)


def test_replies_for_another_thing_or_token_are_ignored(dev: Device) -> None:
    real = dev.broker.handle

    def forged(client: FakeMqtt, topic: str, text: str) -> None:
        token = json.loads(text)["clientToken"]
        other = json.dumps({"clientToken": token, "inProgressJobs": [{"jobId": "evil"}]})
        client.deliver("$aws/things/other-thing/jobs/get/accepted", other)
        client.deliver(f"$aws/things/{THING}/jobs/start-next/accepted", other)
        client.deliver(f"$aws/things/{THING}/jobs/get/accepted", json.dumps({"x": 1}))
        real(client, topic, text)

    dev.mqtt.subscribe("$aws/things/other-thing/jobs/get/accepted")
    dev.broker.handle = forged  # type: ignore[method-assign]
    assert dev.jobs.pending() == ([], [])


def test_no_reply_raises_after_a_bounded_wait(dev: Device) -> None:
    dev.broker.handle = lambda *a: None  # type: ignore[method-assign]
    with pytest.raises(jobs.JobsError, match="no reply to get"):
        dev.jobs.pending()
    assert dev.mqtt.loops <= int(2 / 1) + 2


def test_names_are_checked() -> None:
    with pytest.raises(ValueError):
        jobs.Jobs(FakeMqtt(FakeJobsBroker(None)), "bad/thing")  # type: ignore[arg-type]
    assert not jobs.valid_job_id("a+b")
    assert jobs.clean_details({"a": "x\ny" + "z" * 2000, "b": None, "c": 3}) == {
        "a": "x y" + "z" * 1021,
        "c": "3",
    }


# -- codecs ----------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_md5_matches_hashlib(parts: list[bytes]) -> None:
    h = md5.MD5()
    for p in parts:
        h.update(p)
    assert h.hexdigest() == hashlib.md5(b"".join(parts)).hexdigest()


_hex = st.text("0123456789abcdefABCDEF", min_size=30, max_size=66)
_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**33),
    _hex,
    st.sampled_from(
        [
            "https://h.example.com/f.bin",
            "http://h/f",
            "ftp://x",
            "1.2.3",
            "v1.2.3+4",
            "1.2.3+0",
            "${aws:iot:s3-presigned-url:https://s3.example.com/b/k}",
            "1.2",
            "",
        ]
    ),
)
_keys = st.sampled_from(
    [
        "url",
        "size",
        "sha256",
        "md5",
        "version",
        "image",
        "signed",
        "bc_url",
        "bc_crc",
        "bc_size",
        "bc_idx",
        "note",
    ]
)
_docs = st.tuples(
    st.dictionaries(_keys, _value, max_size=8),
    st.sampled_from([None, "fota", "app_fw_update", "reboot", 7]),
).map(lambda t: t[0] if t[1] is None else dict(t[0], operation=t[1]))


@settings(max_examples=400, deadline=None)
@given(_docs)
def test_document_codec_agrees_with_the_gateway(doc: dict[str, Any]) -> None:
    try:
        host = parse_document(doc)
    except HostDocumentError:
        with pytest.raises(fota_doc.DocumentError):
            fota_doc.parse(doc)
        return
    mine = fota_doc.parse(doc)
    if isinstance(host, OtherJob):
        assert mine is None
        return
    assert isinstance(host, FirmwareJob) and mine is not None
    assert mine["url"] == host.url
    assert mine["size"] == host.size
    assert mine["md5"] == (host.md5.hex() if host.md5 else None)
    assert mine["sha256"] == (host.sha256.hex() if host.sha256 else None)
    assert mine["image"] == host.image and mine["signed"] == host.signed
    if host.version is None:
        assert mine["version"] is None
    else:
        assert mine["version"] == fota_doc.parse_version(host.version)
