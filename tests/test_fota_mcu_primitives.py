"""Direct mode's device code on CPython, piece by piece: the seed's primitives (mcu.fota's
update, test, confirm and reset) and the Jobs client (mcu.jobs), against fakes: an MQTT client
answered by the local job store, an HTTP session, the NOR flash model and the MCUboot model.
"""

from __future__ import annotations

import json

import pytest
from fota_direct_kit import (
    THING,
    FakeJobsBroker,
    FakeMqtt,
    layout,
)
from fota_mcu_kit import Device, secondary_unmarked
from fota_mcu_kit import dev as dev
from fota_mcu_kit import images as images

from bootloader.sim.flash import Flash
from mcu import fota, jobs
from mcu import mcuboot as mb

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
