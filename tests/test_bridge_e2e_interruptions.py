"""``fota-bridge run`` end to end, interrupted: the bridge killed or stopped mid-upload, the
broker restarted mid-job, a job canceled mid-upload, and the Jobs client reporting across a
broker restart.  A real mosquitto, the local jobs service with its HTTPS file server,
virtual MCUs (fota-vmcu on ptys) and the bridge as a real process.

Every test also checks what the bridge told the service (every statusDetails value is a
string AWS accepts) and what it logged (never a presigned URL's query string).
"""

from __future__ import annotations

import itertools
import re
import signal
import sqlite3
import threading
import time
from typing import Any

import e2e_kit
from e2e_kit import MID, PROGRESS_S, Stack, fota_doc, running, swaps

from harness.bridge import BridgeProcess, UpdateSpy
from host_bridge.jobs.client import BrokerConfig, JobsClient

# the kit's fixtures, bound here for pytest to find
images = e2e_kit.images
stack = e2e_kit.stack


# -- interruptions ---------------------------------------------------------------------------


def assert_throttled(spy: UpdateSpy, thing: str, interval: float) -> None:
    """Progress updates short of the end come at most once per ``interval``."""
    times = [
        t
        for t, body in spy.bodies(thing)
        if (p := body.get("statusDetails", {}).get("progress", ""))
        and "/" in p
        and int(p.split("/")[0]) < int(p.split("/")[1])
    ]
    assert len(times) >= 3, spy.bodies(thing)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= interval * 0.8, gaps


def _resumed_at(bridge: BridgeProcess) -> int:
    match = re.search(r"resumed upload at (\d+)", bridge.text(since_start=True))
    assert match, bridge.text()[-3000:]
    return int(match[1])


def test_bridge_killed_mid_upload_resumes_and_applies_once(
    stack: Stack, images: dict[str, bytes]
) -> None:
    vm = stack.device("sensor-a", images["1.0.0"], throttled=True)
    first = stack.bridge()
    pub = stack.jobs.publish("app-big.img", images["big"])
    stack.jobs.create("kill-1", ["sensor-a"], fota_doc(pub, "1.1.0"))
    done, total = stack.jobs.wait_uploading("kill-1", "sensor-a", at_least=MID)
    assert first.kill() == -signal.SIGKILL
    second = stack.bridge(log="bridge-2.log")
    stack.jobs.wait_status("kill-1", "sensor-a", "SUCCEEDED", alive=second.alive)
    assert 0 < _resumed_at(second) < total
    assert _resumed_at(second) >= done
    assert swaps(vm) == ["1.1.0"]
    assert_throttled(stack.spy, "sensor-a", PROGRESS_S)


def test_sigterm_mid_upload_leaves_a_resumable_state(
    stack: Stack, images: dict[str, bytes]
) -> None:
    vm = stack.device("sensor-a", images["1.0.0"], throttled=True)
    first = stack.bridge()
    pub = stack.jobs.publish("app-big.img", images["big"])
    stack.jobs.create("term-1", ["sensor-a"], fota_doc(pub, "1.1.0"))
    stack.jobs.wait_uploading("term-1", "sensor-a", at_least=MID)
    assert first.terminate() == 0
    assert "left resumable" in first.text()
    db = sqlite3.connect(stack.tmp / "bridge-state" / "bridge.sqlite")
    try:
        row = db.execute("SELECT job_id, phase FROM inflight WHERE thing = 'sensor-a'").fetchone()
    finally:
        db.close()
    assert row == ("term-1", "uploading")
    assert stack.jobs.execution("term-1", "sensor-a").status == "IN_PROGRESS"
    second = stack.bridge(log="bridge-2.log")
    stack.jobs.wait_status("term-1", "sensor-a", "SUCCEEDED", alive=second.alive)
    assert _resumed_at(second) > 0
    assert swaps(vm) == ["1.1.0"]


def test_broker_restart_mid_job(stack: Stack, images: dict[str, bytes]) -> None:
    vm = stack.device("sensor-a", images["1.0.0"], throttled=True)
    bridge = stack.bridge()
    pub = stack.jobs.publish("app-big.img", images["big"])
    stack.jobs.create("mq-1", ["sensor-a"], fota_doc(pub, "1.1.0"))
    stack.jobs.wait_uploading("mq-1", "sensor-a")
    stack.broker.stop()
    bridge.wait_log("disconnected from the broker", 10)
    time.sleep(1.0)  # down for a while: the upload goes on, its reports wait
    stack.broker.start()
    bridge.wait_log("connected to", 30, count=2)
    e = stack.jobs.wait_status("mq-1", "sensor-a", "SUCCEEDED", alive=bridge.alive)
    assert e.status_details["version"] == "1.1.0"
    assert swaps(vm) == ["1.1.0"]
    assert bridge.text().count("uploaded ") == 1


def test_job_canceled_mid_upload_stops_cleanly(stack: Stack, images: dict[str, bytes]) -> None:
    vm = stack.device("sensor-a", images["1.0.0"], throttled=True)
    bridge = stack.bridge()
    big = stack.jobs.publish("app-big.img", images["big"])
    stack.jobs.create("cancel-1", ["sensor-a"], fota_doc(big, "1.1.0"))
    stack.jobs.wait_uploading("cancel-1", "sensor-a")
    stack.jobs.cancel("cancel-1")
    bridge.wait_log("job cancel-1 is CANCELED at the service; stopped", 15)
    assert stack.jobs.execution("cancel-1", "sensor-a").status == "CANCELED"
    assert running(stack.state("sensor-a")) == ("1.0.0", True)
    # The bridge takes the next job.
    small = stack.jobs.publish("app-1.2.0.img", images["1.2.0"])
    stack.jobs.create("after-1", ["sensor-a"], fota_doc(small, "1.2.0"))
    stack.jobs.wait_status("after-1", "sensor-a", "SUCCEEDED", alive=bridge.alive)
    assert swaps(vm) == ["1.2.0"]


# -- the Jobs client across a broker restart ----------------------------------------------------


def test_jobs_client_reports_across_a_broker_restart(stack: Stack) -> None:
    """A report made while the broker is down waits for the reconnect, then goes through on
    the renewed subscriptions; the reconnect asks for the next job again ($next/get)."""

    seen: list[str | None] = []
    client = JobsClient(
        BrokerConfig(stack.broker.host, stack.broker.port, "e2e-client"),
        ["sensor-a"],
        lambda t, e: seen.append(e and e.get("jobId")),
    )
    stack.jobs.create("rc-1", ["sensor-a"], {"operation": "other"})
    client.connect()
    try:
        deadline = time.monotonic() + 10
        while "rc-1" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == ["rc-1"], seen
        stack.broker.stop()
        assert not client.connected.wait(0.5)
        result: list[Any] = []
        worker = threading.Thread(
            target=lambda: result.append(
                client.update(
                    "sensor-a",
                    "rc-1",
                    "IN_PROGRESS",
                    {"phase": "downloading"},
                    expected_version=1,
                    timeout_s=5.0,
                )
            )
        )
        worker.start()
        time.sleep(0.5)
        stack.broker.start()
        worker.join(40)
        assert not worker.is_alive()
        assert result and result[0]["executionState"]["status"] == "IN_PROGRESS"
        e = stack.jobs.execution("rc-1", "sensor-a")
        assert (e.status, e.status_details) == ("IN_PROGRESS", {"phase": "downloading"})
        deadline = time.monotonic() + 10
        while seen.count("rc-1") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen.count("rc-1") == 2, seen
    finally:
        client.close()
