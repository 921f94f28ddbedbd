"""The local jobs service against a real mosquitto, with paho clients playing the devices:
get, start-next, $next/get and update replies, every AWS error code, store failures and
throttling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import localjobs_service_kit
from localjobs_service_kit import PLACEHOLDER_URL, T0, FakeClock, Rig, make_rig

from harness.mosquitto import Mosquitto
from localjobs import LocalJobsError
from localjobs import model as m
from localjobs.api import Throttle
from localjobs.store import JobStore

broker = localjobs_service_kit.broker  # the kit's fixture, bound here for pytest to find
rig = localjobs_service_kit.rig  # the kit's fixture, bound here for pytest to find


# -- get, start-next, $next/get ----------------------------------------------------------------
def test_get_start_next_and_next_get(rig: Rig) -> None:
    with rig.device("dev-a") as dev:
        kind, reply = dev.request("get", {"clientToken": "c1"})
        assert kind == "accepted"
        assert reply == {
            "inProgressJobs": [],
            "queuedJobs": [],
            "clientToken": "c1",
            "timestamp": int(T0),
        }
        kind, reply = dev.request("start-next", {"clientToken": "c2"})
        assert (kind, reply) == ("accepted", {"clientToken": "c2", "timestamp": int(T0)})
        kind, reply = dev.request("$next/get")
        assert (kind, reply) == ("accepted", {"timestamp": int(T0)})

        for job in ("first", "second", "third"):
            rig.create(job, ["dev-a"])
            rig.clock.advance(1)
        kind, _ = dev.request("third/update", {"status": "IN_PROGRESS"})
        assert kind == "accepted"

        kind, reply = dev.request("get")
        assert [j["jobId"] for j in reply["inProgressJobs"]] == ["third"]
        assert [j["jobId"] for j in reply["queuedJobs"]] == ["first", "second"]

        kind, reply = dev.request("$next/get", {"includeJobDocument": False})
        assert reply["execution"]["jobId"] == "third"
        assert "jobDocument" not in reply["execution"]

        for expected in ("third", "first", "second"):  # IN_PROGRESS first, then by creation
            kind, reply = dev.request(
                "start-next", {"statusDetails": {"phase": "start"}, "stepTimeoutInMinutes": 5}
            )
            ex = reply["execution"]
            assert (kind, ex["jobId"], ex["status"], ex["thingName"]) == (
                "accepted",
                expected,
                "IN_PROGRESS",
                "dev-a",
            )
            assert ex["statusDetails"] == {"phase": "start"}
            assert ex["approximateSecondsBeforeTimedOut"] == 300
            assert {
                "queuedAt",
                "startedAt",
                "lastUpdatedAt",
                "versionNumber",
                "executionNumber",
            } <= set(ex)
            kind, _ = dev.request(f"{expected}/update", {"status": "SUCCEEDED"})
            assert kind == "accepted"
        kind, reply = dev.request("start-next")
        assert "execution" not in reply


def test_update_accepted_reply(rig: Rig) -> None:
    rig.create("j1", ["dev-b"])
    with rig.device("dev-b") as dev:
        kind, reply = dev.request(
            "j1/update",
            {
                "status": "IN_PROGRESS",
                "statusDetails": {"progress": "1/4"},
                "expectedVersion": 1,
                "includeJobExecutionState": True,
                "includeJobDocument": True,
                "clientToken": "u1",
            },
        )
        assert kind == "accepted"
        assert reply["executionState"] == {
            "status": "IN_PROGRESS",
            "statusDetails": {"progress": "1/4"},
            "versionNumber": 2,
        }
        assert reply["jobDocument"]["url"].startswith(PLACEHOLDER_URL + "?X-Amz-Signature=")
        assert reply["clientToken"] == "u1" and reply["timestamp"] == int(T0)
        # AWS's embedded SDK sends numbers as strings
        kind, reply = dev.request("j1/update", {"status": "SUCCEEDED", "expectedVersion": "2"})
        assert (kind, reply) == ("accepted", {"timestamp": int(T0)})


# -- every error code --------------------------------------------------------------------------
def test_rejections_carry_aws_error_codes(rig: Rig) -> None:
    rig.create("j1", ["dev-c"])
    with rig.device("dev-c") as dev:

        def rejected(suffix: str, body: Any, code: str) -> dict[str, Any]:
            kind, reply = dev.request(suffix, body)
            assert (kind, reply["code"]) == ("rejected", code), reply
            assert reply["timestamp"] == int(T0) and reply["message"]
            return dict(reply)

        r = rejected("no-such-api", {"clientToken": "x1"}, m.INVALID_TOPIC)
        assert r["clientToken"] == "x1"
        rejected("j1/update", b"{not json", m.INVALID_JSON)
        rejected("j1/update", b"\xff\xfe", m.INVALID_JSON)
        rejected("j1/update", b"[1, 2]", m.INVALID_REQUEST)
        r = rejected("j1/update", {"clientToken": "x2"}, m.INVALID_REQUEST)  # no status
        assert r["clientToken"] == "x2" and "executionState" not in r
        rejected("j1/update", {"status": "QUEUED"}, m.INVALID_REQUEST)
        rejected(
            "j1/update", {"status": "IN_PROGRESS", "statusDetails": {"k": ""}}, m.INVALID_REQUEST
        )
        rejected(
            "j1/update", {"status": "IN_PROGRESS", "expectedVersion": "one"}, m.INVALID_REQUEST
        )
        rejected(
            "j1/update", {"status": "IN_PROGRESS", "includeJobDocument": "yes"}, m.INVALID_REQUEST
        )
        rejected("j1/update", {"status": "IN_PROGRESS", "clientToken": "x" * 65}, m.INVALID_REQUEST)
        rejected("start-next", {"stepTimeoutInMinutes": 0}, m.INVALID_REQUEST)
        rejected("$next/update", {"status": "IN_PROGRESS"}, m.INVALID_REQUEST)
        rejected("nope/update", {"status": "IN_PROGRESS"}, m.RESOURCE_NOT_FOUND)
        rejected("nope/get", {}, m.RESOURCE_NOT_FOUND)
        r = rejected(
            "j1/update", {"status": "IN_PROGRESS", "expectedVersion": 7}, m.VERSION_MISMATCH
        )
        assert r["executionState"] == {"status": "QUEUED", "statusDetails": {}, "versionNumber": 1}
        kind, _ = dev.request(
            "j1/update", {"status": "FAILED", "statusDetails": {"reason": "hash mismatch"}}
        )
        assert kind == "accepted"
        r = rejected(
            "j1/update", {"status": "SUCCEEDED", "clientToken": "x3"}, m.INVALID_STATE_TRANSITION
        )
        assert r["executionState"]["status"] == "FAILED" and r["clientToken"] == "x3"
        rejected("j1/get", {}, m.TERMINAL_STATE_REACHED)


class BrokenStore(JobStore):
    """A store whose disk fails on updates (through the real interface, no patching)."""

    def update_execution(self, *args: Any, **kwargs: Any) -> Any:
        raise LocalJobsError("disk I/O error")


def test_store_failure_is_internal_error(tmp_path: Path, broker: Mosquitto) -> None:
    r = make_rig(tmp_path, broker, BrokenStore)
    try:
        r.create("j1", ["dev-d"])
        with r.device("dev-d") as dev:
            kind, reply = dev.request("j1/update", {"status": "IN_PROGRESS", "clientToken": "e"})
            assert (kind, reply["code"], reply["clientToken"]) == (
                "rejected",
                m.INTERNAL_ERROR,
                "e",
            )
            assert "disk" not in reply["message"]  # internals stay in the log
            kind, _ = dev.request("get")  # the service lives on
            assert kind == "accepted"
    finally:
        r.service.stop()
        r.store.close()


def test_throttling(tmp_path: Path, broker: Mosquitto) -> None:
    clock = FakeClock()
    r = make_rig(tmp_path, broker, throttle=Throttle(1.0, 2, clock))
    try:
        with r.device("dev-e") as dev, r.device("dev-f") as other:
            assert dev.request("get")[0] == "accepted"
            assert dev.request("get")[0] == "accepted"
            kind, reply = dev.request("get", {"clientToken": "slow"})
            assert (kind, reply["code"], reply["clientToken"]) == (
                "rejected",
                m.REQUEST_THROTTLED,
                "slow",
            )
            assert other.request("get")[0] == "accepted"  # buckets are per thing
            clock.advance(1.0)
            assert dev.request("get")[0] == "accepted"
    finally:
        r.service.stop()
        r.store.close()
