"""The local jobs service against a real mosquitto, with paho clients playing the devices.

Also the request front end (``api.py``) without a broker: topic routing, error paths, and a
property test that no topic or payload makes it raise.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobs_device import JobsDevice, tls_refused

from harness.mosquitto import BrokerError, Mosquitto
from localjobs import LocalJobsError
from localjobs import model as m
from localjobs.api import JobsApi, Route, Throttle, parse_topic
from localjobs.service import JobsService, ServiceTls
from localjobs.store import JobStore

T0 = 1_700_000_000.0
PLACEHOLDER_URL = "https://127.0.0.1:8443/files/app-1.2.3.bin"
DOC = {
    "operation": "fota",
    "version": "1.2.3",
    "size": 3,
    "url": "${aws:iot:s3-presigned-url:" + PLACEHOLDER_URL + "}",
}


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Presigner:
    """Signs each delivery anew, so that tests see a fresh URL every time."""

    def __init__(self) -> None:
        self.count = itertools.count(1)

    def __call__(self, url: str) -> str:
        return f"{url}?X-Amz-Signature=s{next(self.count)}"


@contextmanager
def running_broker(directory: Path, *, tls: bool = False) -> Iterator[Mosquitto]:
    """A started mosquitto; the test fails (never skips) when there is none to start."""
    try:
        mq = Mosquitto(directory, tls=tls)
        mq.start()
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield mq
    finally:
        mq.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with running_broker(tmp_path_factory.mktemp("mosquitto")) as mq:
        yield mq


@dataclass
class Rig:
    store: JobStore
    service: JobsService
    clock: FakeClock
    broker: Mosquitto

    def device(self, thing: str) -> JobsDevice:
        return JobsDevice(self.broker.host, self.broker.port, thing).connect()

    def create(self, job_id: str, things: list[str], doc: dict[str, Any] = DOC, **kw: Any) -> None:
        self.store.create_job(job_id, things, json.dumps(doc), **kw)
        self.service.publish_changes()


def make_rig(
    tmp_path: Path, broker: Mosquitto, store_cls: type[JobStore] = JobStore, **kw: Any
) -> Rig:
    clock = FakeClock()
    store = store_cls(tmp_path / "jobs.sqlite3", clock)
    service = JobsService(store, broker.host, broker.port, clock=clock, poll_interval_s=0.05, **kw)
    service.start()
    return Rig(store, service, clock, broker)


@pytest.fixture
def rig(tmp_path: Path, broker: Mosquitto) -> Iterator[Rig]:
    r = make_rig(tmp_path, broker, presign=Presigner())
    yield r
    r.service.stop()
    r.store.close()


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


# -- isolation ---------------------------------------------------------------------------------
def test_a_device_gets_only_its_own_replies(rig: Rig) -> None:
    rig.create("j1", ["dev-n", "dev-o"])
    with (
        rig.device("dev-n") as a,
        rig.device("dev-o") as b,
        JobsDevice(
            rig.broker.host, rig.broker.port, "spy", subscribe="$aws/things/+/jobs/#"
        ).connect() as spy,
    ):
        kind, reply = b.request("j1/update", {"status": "IN_PROGRESS", "clientToken": "b"})
        assert kind == "accepted"
        # a's own request is answered after b's, by the same publisher: had b's reply been
        # sent to a's topics, it would have arrived first
        kind, reply = a.request("get", {"clientToken": "a"})
        assert reply["clientToken"] == "a"
        assert reply["queuedJobs"][0]["jobId"] == "j1" and not reply["inProgressJobs"]
        assert all(t.startswith("$aws/things/dev-n/") for t, _ in a.received)
        assert not any(isinstance(p, dict) and p.get("clientToken") == "b" for _, p in a.received)
        spy.expect("$aws/things/dev-n/jobs/get/accepted")
        replies = [t for t, _ in spy.received if t.endswith(("/accepted", "/rejected"))]
        assert replies == [
            "$aws/things/dev-o/jobs/j1/update/accepted",
            "$aws/things/dev-n/jobs/get/accepted",
        ]


# -- broker restart ------------------------------------------------------------------------------
def test_service_reconnects_after_a_broker_restart(tmp_path: Path) -> None:
    with running_broker(tmp_path / "mq") as mq:
        r = make_rig(tmp_path, mq)
        try:
            r.create("j1", ["dev-p"])
            mq.restart()
            assert r.service.wait_connected(15.0), mq.log_text()
            with r.device("dev-p") as dev:
                kind, reply = dev.request("start-next")
                assert (kind, reply["execution"]["jobId"]) == ("accepted", "j1")
        finally:
            r.service.stop()
            r.store.close()


# -- mutual TLS ----------------------------------------------------------------------------------
def test_tls_listener_requires_a_client_certificate(tmp_path: Path) -> None:
    with running_broker(tmp_path / "mq", tls=True) as mq:
        assert mq.pki is not None and mq.tls_port is not None
        svc_cert = mq.pki.client("jobs-service")
        clock = FakeClock()
        with JobStore(tmp_path / "jobs.sqlite3", clock) as store:
            store.create_job("j1", ["dev-q"], json.dumps(DOC))
            service = JobsService(
                store,
                "127.0.0.1",
                mq.tls_port,
                ServiceTls(mq.pki.ca, svc_cert.cert, svc_cert.key),
                clock,
            )
            service.start()
            try:
                dev_cert = mq.pki.client("dev-q")
                with JobsDevice(
                    "127.0.0.1",
                    mq.tls_port,
                    "dev-q",
                    ca=mq.pki.ca,
                    cert=dev_cert.cert,
                    key=dev_cert.key,
                ) as dev:
                    kind, reply = dev.request("start-next", {"clientToken": "tls"})
                    assert (kind, reply["execution"]["jobId"]) == ("accepted", "j1")
                assert tls_refused("127.0.0.1", mq.tls_port, mq.pki.ca)
                no_cert = JobsService(store, "127.0.0.1", mq.tls_port, ServiceTls(mq.pki.ca), clock)
                with pytest.raises(LocalJobsError):
                    no_cert.start(timeout_s=5.0)
            finally:
                service.stop()


# -- the front end without a broker ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("topic", "route"),
    [
        ("$aws/things/t1/jobs/get", Route("t1", "get")),
        ("$aws/things/t1/jobs/start-next", Route("t1", "start-next")),
        ("$aws/things/t1/jobs/$next/get", Route("t1", "describe", "$next")),
        ("$aws/things/t1/jobs/j1/get", Route("t1", "describe", "j1")),
        ("$aws/things/t1/jobs/j1/update", Route("t1", "update", "j1")),
        ("$aws/things/t1/jobs/get/get", Route("t1", "describe", "get")),
        ("$aws/things/t1/jobs/j1/delete", Route("t1", "unknown")),
        ("$aws/things/t1/jobs/a/b/c", Route("t1", "unknown")),
        ("$aws/things/t1/jobs", Route("t1", "unknown")),
        ("$aws/things/t1/jobs/get/accepted", None),
        ("$aws/things/t1/jobs/j1/update/rejected", None),
        ("$aws/things/t1/jobs/notify", None),
        ("$aws/things/t1/jobs/notify-next", None),
        ("$aws/things/t1/shadow/get", None),
        ("other/topic", None),
    ],
)
def test_topic_routes(topic: str, route: Route | None) -> None:
    assert parse_topic(topic) == route


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobsApi]:
    """A front end on a throwaway store, shared by the property tests."""
    store = JobStore(tmp_path_factory.mktemp("api") / "jobs.sqlite3", FakeClock())
    store.create_job("j1", ["prop-thing"], json.dumps(DOC))
    yield JobsApi(store)
    store.close()


@given(topic=st.text(max_size=120), payload=st.binary(max_size=300))
def test_front_end_never_raises(api: JobsApi, topic: str, payload: bytes) -> None:
    reply = api.handle(topic, payload)
    if reply is not None:
        assert reply.topic.endswith(("/accepted", "/rejected"))
        assert json.dumps(reply.payload)
        assert parse_topic(reply.topic) is None  # never answered again


@given(
    suffix=st.sampled_from(["get", "start-next", "j1/get", "$next/get", "j1/update"]),
    body=st.dictionaries(
        st.sampled_from(
            [
                "status",
                "statusDetails",
                "expectedVersion",
                "executionNumber",
                "stepTimeoutInMinutes",
                "includeJobDocument",
                "includeJobExecutionState",
                "clientToken",
            ]
        ),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.text(max_size=20),
            st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
        ),
    ),
)
def test_any_request_body_gets_one_reply(api: JobsApi, suffix: str, body: dict[str, Any]) -> None:
    reply = api.handle(f"$aws/things/prop-thing/jobs/{suffix}", json.dumps(body).encode())
    assert reply is not None
    if reply.topic.endswith("/rejected"):
        assert reply.payload["code"] in m.ERROR_CODES
