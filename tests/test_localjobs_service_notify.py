"""The local jobs service against a real mosquitto, with paho clients playing the devices:
notify and notify-next as the queue changes, step-timeout sweeps, changes made by another
process, and presigned URLs signed afresh on every delivery."""

from __future__ import annotations

import json
from pathlib import Path

import localjobs_service_kit
from jobs_device import JobsDevice
from localjobs_service_kit import DOC, PLACEHOLDER_URL, T0, FakeClock, Rig, make_rig

from harness.mosquitto import Mosquitto
from localjobs import model as m
from localjobs.service import JobsService
from localjobs.store import JobStore

broker = localjobs_service_kit.broker  # the kit's fixture, bound here for pytest to find
rig = localjobs_service_kit.rig  # the kit's fixture, bound here for pytest to find


# -- notifications -----------------------------------------------------------------------------
def test_notify_and_notify_next_follow_the_queue(rig: Rig) -> None:
    with rig.device("dev-g") as dev:
        rig.create("j1", ["dev-g"])
        nxt = dev.expect("notify-next")
        assert nxt["execution"]["jobId"] == "j1" and nxt["execution"]["status"] == "QUEUED"
        assert nxt["execution"]["jobDocument"]["url"].startswith(PLACEHOLDER_URL + "?")
        assert nxt["timestamp"] == int(T0)
        note = dev.expect("notify")
        assert [j["jobId"] for j in note["jobs"]["QUEUED"]] == ["j1"]
        assert "IN_PROGRESS" not in note["jobs"]

        rig.create("j2", ["dev-g"])  # not next: notify only
        note = dev.expect("notify")
        assert [j["jobId"] for j in note["jobs"]["QUEUED"]] == ["j1", "j2"]

        # j2 starts and becomes next (AWS's own example); j1 stays queued
        assert dev.request("j2/update", {"status": "IN_PROGRESS"})[0] == "accepted"
        assert dev.expect("notify-next")["execution"]["jobId"] == "j2"
        note = dev.expect("notify")
        assert [j["jobId"] for j in note["jobs"]["IN_PROGRESS"]] == ["j2"]

        # a progress update of the same execution changes neither
        assert (
            dev.request(
                "j2/update", {"status": "IN_PROGRESS", "statusDetails": {"progress": "2/4"}}
            )[0]
            == "accepted"
        )
        # cancel j1 (QUEUED): the list changes, next does not
        rig.store.cancel_job("j1")
        rig.service.publish_changes()
        note = dev.expect("notify")
        assert note["jobs"] == {"IN_PROGRESS": [note["jobs"]["IN_PROGRESS"][0]]}
        # j2 ends: the queue empties
        assert dev.request("j2/update", {"status": "SUCCEEDED"})[0] == "accepted"
        assert dev.expect("notify-next") == {"timestamp": int(T0)}
        assert dev.expect("notify") == {"timestamp": int(T0), "jobs": {}}
        # the quiet updates above published nothing more
        assert dev.pending("notify-next") == 0 and dev.pending("notify") == 0


def test_cancel_of_the_next_job_moves_notify_next(rig: Rig) -> None:
    with rig.device("dev-h") as dev:
        rig.create("j1", ["dev-h"])
        rig.create("j2", ["dev-h"])
        assert dev.expect("notify-next")["execution"]["jobId"] == "j1"
        rig.store.cancel_job("j1")
        rig.service.publish_changes()
        assert dev.expect("notify-next")["execution"]["jobId"] == "j2"
        rig.store.cancel_job("j2")
        rig.service.publish_changes()
        assert dev.expect("notify-next") == {"timestamp": int(T0)}


def test_step_timeout_is_swept_and_notified(rig: Rig) -> None:
    with rig.device("dev-i") as dev:
        rig.create("j1", ["dev-i"])
        assert dev.expect("notify-next")["execution"]["status"] == "QUEUED"
        kind, reply = dev.request("start-next", {"stepTimeoutInMinutes": 1})
        assert reply["execution"]["approximateSecondsBeforeTimedOut"] == 60
        rig.clock.advance(60)
        # the service's own sweep (every 50 ms here) times it out and tells the device
        assert dev.expect("notify-next") == {"timestamp": int(T0 + 60)}
        kind, reply = dev.request("j1/update", {"status": "SUCCEEDED"})
        assert (kind, reply["code"], reply["executionState"]["status"]) == (
            "rejected",
            m.INVALID_STATE_TRANSITION,
            "TIMED_OUT",
        )


def test_changes_made_by_another_process_reach_devices(rig: Rig, tmp_path: Path) -> None:
    with rig.device("dev-j") as dev:
        with JobStore(tmp_path / "jobs.sqlite3", rig.clock) as other:  # e.g. `jobs create`
            other.create_job("cli-job", ["dev-j"], json.dumps(DOC))
        # no publish_changes(): the service's poll finds it in the change log
        assert dev.expect("notify-next")["execution"]["jobId"] == "cli-job"


def test_pending_jobs_are_announced_on_start(tmp_path: Path, broker: Mosquitto) -> None:
    clock = FakeClock()
    with JobStore(tmp_path / "jobs.sqlite3", clock) as store:
        store.create_job("early", ["dev-k"], json.dumps(DOC))
        with JobsDevice(broker.host, broker.port, "dev-k") as dev:
            service = JobsService(store, broker.host, broker.port, clock=clock)
            service.start()
            try:
                assert dev.expect("notify-next")["execution"]["jobId"] == "early"
            finally:
                service.stop()


# -- presigned URLs ----------------------------------------------------------------------------
def test_presigned_placeholder_is_signed_afresh_on_every_delivery(rig: Rig) -> None:
    nested = {
        "files": [{"url": DOC["url"]}, {"url": "https://elsewhere/x.bin"}],
        "note": "see ${aws:iot:s3-presigned-url:https://127.0.0.1:1/files/a}",
    }
    rig.create("j1", ["dev-l"], nested)
    with rig.device("dev-l") as dev:
        urls = []
        for _ in range(2):
            kind, reply = dev.request("j1/get")
            assert kind == "accepted"
            doc = reply["execution"]["jobDocument"]
            assert doc["files"][1]["url"] == "https://elsewhere/x.bin"
            assert doc["note"].startswith("see https://127.0.0.1:1/files/a?X-Amz-Signature=")
            urls.append(doc["files"][0]["url"])
        assert urls[0] != urls[1]
        assert all(u.startswith(PLACEHOLDER_URL + "?X-Amz-Signature=") for u in urls)
        assert "${aws:iot" in rig.store.describe("j1").document  # stored as written


def test_without_a_signer_the_placeholder_becomes_the_bare_url(
    tmp_path: Path, broker: Mosquitto
) -> None:
    r = make_rig(tmp_path, broker)
    try:
        r.create("j1", ["dev-m"])
        with r.device("dev-m") as dev:
            kind, reply = dev.request("start-next")
            assert kind == "accepted"
            assert reply["execution"]["jobDocument"]["url"] == PLACEHOLDER_URL
    finally:
        r.service.stop()
        r.store.close()
