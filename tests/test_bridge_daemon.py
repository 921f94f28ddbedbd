"""The daemon's job bookkeeping against a fake Jobs client: what it reports, when, and what it
does with the service's refusals.  (The real thing, end to end: test_bridge_e2e_jobs.py and
test_bridge_e2e_interruptions.py.)"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from host_bridge import reporting
from host_bridge.config import BridgeConfig, DeviceConfig
from host_bridge.daemon import Bridge, DeviceWorker
from host_bridge.jobs.client import BrokerConfig, JobsError
from host_bridge.reporting import Stop, clean_details, one_line

THING = "sensor-a"


class FakeJobs:
    """Records requests; answers from scripted results (an exception is raised)."""

    def __init__(self, broker: BrokerConfig, things: list[str], on_next: Any) -> None:
        self.connected = threading.Event()
        self.connected.set()
        self.updates: list[dict[str, Any]] = []
        self.update_results: list[Any] = []
        self.describe_results: list[Any] = []
        self.describes = 0

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def update(
        self,
        thing: str,
        job_id: str,
        status: str,
        details: dict[str, str] | None = None,
        expected_version: int | None = None,
        step_timeout_min: int | None = None,
        *,
        timeout_s: float = 10.0,
        retries: int = 3,
    ) -> dict[str, Any]:
        self.updates.append(
            {
                "job": job_id,
                "status": status,
                "details": details,
                "expected": expected_version,
                "retries": retries,
            }
        )
        result = self.update_results.pop(0) if self.update_results else None
        if isinstance(result, Exception):
            raise result
        version = (expected_version or 1) + 1
        return result or {"executionState": {"status": status, "versionNumber": version}}

    def describe(self, thing: str, job_id: str) -> dict[str, Any] | None:
        self.describes += 1
        result = self.describe_results.pop(0) if self.describe_results else None
        if isinstance(result, Exception):
            raise result
        return result  # type: ignore[no-any-return]


def rejected(code: str, state: dict[str, Any] | None = None) -> JobsError:
    return JobsError(f"x/update for {THING} rejected: {code}: no", code, state)


@pytest.fixture
def bridge(tmp_path: Path) -> Any:
    cfg = BridgeConfig(
        broker=BrokerConfig("127.0.0.1", 1883),
        devices=[DeviceConfig(THING, "/dev/null")],
        state_dir=tmp_path / "state",
        progress_interval_s=100.0,
    )

    def no_device(device: DeviceConfig) -> Any:
        raise AssertionError("the device must not be touched")

    b = Bridge(cfg, jobs_factory=FakeJobs, client_factory=no_device)
    yield b
    b.store.close()


def worker(bridge: Bridge, job: str = "j1", version: int | None = 3) -> DeviceWorker:
    w = bridge.workers[THING]
    w.current, w.version = job, version
    return w


def jobs(bridge: Bridge) -> FakeJobs:
    return bridge.jobs  # type: ignore[return-value]


def test_details_are_strings_aws_accepts() -> None:
    details = clean_details(
        {
            "phase": "uploading",
            "empty": "",
            "none": None,
            "number": 5,
            "reason": "line one\nline\ttwo\x00\x1b[31m red\x7f",
            "long": "x" * 5000,
            "url": "HTTP 403 from https://h/f.bin?X-Amz-Signature=abc&X-Amz-Date=1 (expired)",
        }
    )
    assert details["phase"] == "uploading" and details["number"] == "5"
    assert "empty" not in details and "none" not in details
    assert details["reason"] == "line one line two [31m red"
    assert len(details["long"]) == 1024 and details["long"].endswith("...")
    assert details["url"] == "HTTP 403 from https://h/f.bin (expired)"
    assert one_line("a\r\nb") == "a b"


def test_version_mismatch_takes_the_service_version(bridge: Bridge) -> None:
    w = worker(bridge)
    jobs(bridge).update_results = [
        rejected("VersionMismatch", {"status": "IN_PROGRESS", "versionNumber": 7})
    ]
    w.report("IN_PROGRESS", {"phase": "uploading"})
    assert [u["expected"] for u in jobs(bridge).updates] == [3, 7]
    assert w.version == 8


def test_version_mismatch_on_an_ended_execution_stops(bridge: Bridge) -> None:
    w = worker(bridge)
    jobs(bridge).update_results = [
        rejected("VersionMismatch", {"status": "CANCELED", "versionNumber": 4})
    ]
    with pytest.raises(Stop) as stop:
        w.report("IN_PROGRESS", {"phase": "uploading"})
    assert stop.value.status == "CANCELED"


def test_a_final_status_that_already_got_through_is_delivered(bridge: Bridge) -> None:
    w = worker(bridge)
    jobs(bridge).update_results = [
        rejected("InvalidStateTransition", {"status": "SUCCEEDED", "versionNumber": 5})
    ]
    w.report("SUCCEEDED", {})  # an earlier try was applied, its reply lost: no Stop
    jobs(bridge).update_results = [rejected("InvalidStateTransition", {"status": "TIMED_OUT"})]
    with pytest.raises(Stop) as stop:
        w.report("SUCCEEDED", {})
    assert stop.value.status == "TIMED_OUT"


def test_an_undelivered_success_stays_a_success(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reporting, "FINAL_RETRY_PAUSE_S", 0.0)
    w = worker(bridge)
    jobs(bridge).update_results = [JobsError("no reply")] * reporting.FINAL_ATTEMPTS
    w.finish("j1", "SUCCEEDED", "", "confirming", {"version": "1.1.0"})
    assert bridge.store.outcome(THING, "j1") == ("SUCCEEDED", "")
    assert [u["status"] for u in jobs(bridge).updates] == ["SUCCEEDED"] * reporting.FINAL_ATTEMPTS


def test_a_refused_final_status_is_not_retried(bridge: Bridge) -> None:
    w = worker(bridge)
    jobs(bridge).update_results = [rejected("InvalidRequest")]
    w.finish("j1", "FAILED", "bad\nthing", "uploading")
    assert len(jobs(bridge).updates) == 1
    assert jobs(bridge).updates[0]["details"] == {"phase": "uploading", "reason": "bad thing"}
    assert bridge.store.outcome(THING, "j1") == ("FAILED", "bad thing")


def test_a_finished_job_delivered_again_is_reported_not_redone(bridge: Bridge) -> None:
    bridge.store.finish(THING, "j1", "SUCCEEDED", "")
    w = worker(bridge, job=None, version=None)  # type: ignore[arg-type]
    jobs(bridge).describe_results = [{"jobId": "j1", "status": "IN_PROGRESS", "versionNumber": 9}]
    w.handle(
        {
            "jobId": "j1",
            "status": "IN_PROGRESS",
            "versionNumber": 4,
            "jobDocument": {"url": "https://h/x.bin", "size": 10},
        }
    )
    assert [(u["status"], u["expected"]) for u in jobs(bridge).updates] == [("SUCCEEDED", 9)]

    # Once the service has it, a stale delivery changes nothing.
    jobs(bridge).describe_results = [rejected("TerminalStateReached")]
    w.handle({"jobId": "j1", "status": "IN_PROGRESS", "versionNumber": 4})
    assert len(jobs(bridge).updates) == 1


def test_progress_is_best_effort_and_throttled(bridge: Bridge) -> None:
    w = worker(bridge)
    for done in range(0, 1000, 100):
        w.progress("uploading", done, 1000)
    w.progress("uploading", 1000, 1000)
    assert [u["details"]["progress"] for u in jobs(bridge).updates] == ["0/1000", "1000/1000"]
    assert all(u["retries"] == 0 for u in jobs(bridge).updates)

    jobs(bridge).updates.clear()
    jobs(bridge).connected.clear()  # the broker is away: nothing is sent, nothing fails
    w.tell({"phase": "testing"})
    assert jobs(bridge).updates == []
    jobs(bridge).connected.set()
    jobs(bridge).update_results = [JobsError("no reply")]
    w.tell({"phase": "testing"})  # fails quietly, then keeps quiet for a while
    w.tell({"phase": "confirming"})
    assert len(jobs(bridge).updates) == 1


def test_cancel_is_checked_against_the_service(bridge: Bridge) -> None:
    w = worker(bridge)
    w.notify({"jobId": "j1", "status": "IN_PROGRESS"})  # the job in hand again: nothing
    assert w.inbox.empty() and not w.canceled.is_set()
    w.notify(None)  # the queue emptied: was it canceled?
    jobs(bridge).describe_results = [JobsError("no reply")]
    w.checkpoint()  # cannot tell: carry on, ask again later
    assert w.canceled.is_set()
    jobs(bridge).describe_results = [{"jobId": "j1", "status": "IN_PROGRESS"}]
    w.checkpoint()
    assert not w.canceled.is_set()
    w.notify({"jobId": "j2", "status": "QUEUED"})
    assert w.inbox.qsize() == 1
    jobs(bridge).describe_results = [rejected("TerminalStateReached")]
    with pytest.raises(Stop) as stop:
        w.checkpoint()
    assert stop.value.status == "CANCELED"
    w.stopped(stop.value)
    assert bridge.store.outcome(THING, "j1") == ("CANCELED", "ended by the service")
