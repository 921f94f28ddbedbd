"""``fota-bridge run`` end to end: a real mosquitto, the local jobs service with its HTTPS file
server, virtual MCUs (fota-vmcu on ptys) and the bridge as a real process.

Every test also checks what the bridge told the service (every statusDetails value is a
string AWS accepts) and what it logged (never a presigned URL's query string).
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from jobs_device import JobsDevice

from bootloader.formats.layout import load_board
from bootloader.sim.testimages import payload, sign
from harness.bridge import BridgeProcess, LocalJobs, Published, UpdateSpy, write_config
from harness.mosquitto import BrokerError, Mosquitto
from harness.vmcu import Vmcu
from host_bridge.jobs.client import BrokerConfig, JobsClient
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink
from localjobs.service import ServiceTls

BOARD: Final = "nrf52840"
SMALL: Final = 3000  # unthrottled tests: a few sectors
BIG: Final = 64 * 1024  # throttled tests: long enough to act mid-upload
BAUD: Final = "115200"
MID: Final = 8 * 1024  # "mid-upload": past the first chunk, which a device never resumes after
PROGRESS_S: Final = 0.3  # the bridges' progress_interval_s
SWAP_TEST: Final = re.compile(r"swap type test, running version (\S+)")


def image(version: str, size: int = SMALL, on_boot: str = "confirm") -> bytes:
    head = b'#vmcu:{"on_boot": "' + on_boot.encode() + b'"}\n'
    return sign(head + payload(size, f"e2e-{version}-{on_boot}-{size}"), version, load_board(BOARD))


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    return {
        "1.0.0": image("1.0.0"),
        "1.1.0": image("1.1.0"),
        "1.2.0": image("1.2.0"),
        "crash": image("1.2.0", on_boot="crash"),
        "big": image("1.1.0", BIG),
    }


def fota_doc(pub: Published, version: str) -> dict[str, Any]:
    return {
        "operation": "fota",
        "url": pub.url,
        "size": pub.size,
        "sha256": pub.sha256,
        "version": version,
    }


def seed_doc(pub: Published) -> dict[str, Any]:
    return {"bc_idx": 1, "bc_crc": pub.md5, "bc_size": pub.size, "bc_url": pub.url}


@dataclass
class Stack:
    tmp: Path
    broker: Mosquitto
    jobs: LocalJobs
    spy: UpdateSpy
    devices: dict[str, Vmcu] = field(default_factory=dict)
    bridges: list[BridgeProcess] = field(default_factory=list)

    def device(self, thing: str, load: bytes, throttled: bool = False) -> Vmcu:
        vm = Vmcu(
            self.tmp, BOARD, load=load, name=thing, args=["--baud", BAUD] if throttled else []
        )
        vm.start()
        self.devices[thing] = vm
        return vm

    def config(self, name: str = "bridge.toml", **kw: Any) -> Path:
        links = {t: vm.link for t, vm in self.devices.items()}
        return write_config(
            self.tmp / name,
            self.broker,
            self.jobs,
            links,
            board=BOARD,
            state_dir=self.tmp / "bridge-state",
            **kw,
        )

    def bridge(self, config: Path | None = None, log: str = "bridge.log") -> BridgeProcess:
        b = BridgeProcess(config or self.config(), self.tmp / log)
        self.bridges.append(b)
        return b.start()

    def state(self, thing: str) -> list[Any]:
        """The device's image slots, asked over SMP (only while no bridge holds the port)."""
        link = SerialLink(str(self.devices[thing].link))
        try:
            return SmpClient(link, timeout_s=1.0).image_state()
        finally:
            link.close()

    def log_text(self) -> str:
        return "".join(b.text() for b in self.bridges)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    try:
        broker = Mosquitto(tmp_path / "mq")
        broker.start()
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    jobs = LocalJobs(tmp_path / "jobs", broker).start()
    spy = UpdateSpy(broker)
    s = Stack(tmp_path, broker, jobs, spy)
    try:
        yield s
        s.spy.check_details()
        assert "X-Amz" not in s.log_text()
        assert "Traceback" not in s.log_text(), s.log_text()[-3000:]
    finally:
        for b in s.bridges:
            if b.running:
                b.kill()
        for vm in s.devices.values():
            vm.close()
        spy.close()
        jobs.close()
        broker.stop()


def swaps(vm: Vmcu) -> list[str]:
    """The versions booted by a test swap, in order."""
    return [m[1] for line in vm.lines if (m := SWAP_TEST.search(line))]


def running(states: list[Any]) -> tuple[str, bool]:
    active = next(s for s in states if s.active)
    return active.version, active.confirmed


# -- the demo's four cases -------------------------------------------------------------------


def test_seed_job_succeeds_and_a_job_is_handled_once(
    stack: Stack, images: dict[str, bytes]
) -> None:
    vm = stack.device("sensor-a", images["1.0.0"])
    bridge = stack.bridge()
    pub = stack.jobs.publish("app-1.1.0.img", images["1.1.0"])
    stack.jobs.create("seed-1", ["sensor-a"], seed_doc(pub))
    e = stack.jobs.wait_status("seed-1", "sensor-a", "SUCCEEDED", alive=bridge.alive)
    assert e.status_details["version"] == "1.1.0"
    assert swaps(vm) == ["1.1.0"]
    vm.wait_for_log(r"firmware confirmed itself")

    # The same execution delivered again (a stale notify-next): nothing is uploaded again.
    with JobsDevice(
        stack.broker.host, stack.broker.port, "operator", subscribe="operator/none"
    ) as op:
        op.client.publish(
            "$aws/things/sensor-a/jobs/notify-next",
            (
                '{"timestamp": 1, "execution": {"jobId": "seed-1", "thingName": "sensor-a", '
                '"status": "IN_PROGRESS", "versionNumber": 2, "executionNumber": 1, '
                '"jobDocument": ' + json.dumps(seed_doc(pub)) + "}}"
            ),
            qos=1,
        ).wait_for_publish(5)
    bridge.wait_log("job seed-1 was already handled", 10)
    # ... and a restart asks for the next job ($next/get) and finds none to do.
    bridge.terminate()
    again = stack.bridge(log="bridge-2.log")
    again.wait_log("connected to")
    time.sleep(0.5)
    again.terminate()
    assert stack.log_text().count("uploaded ") == 1
    assert swaps(vm) == ["1.1.0"]
    assert running(stack.state("sensor-a")) == ("1.1.0", True)
    assert stack.jobs.execution("seed-1", "sensor-a").status == "SUCCEEDED"


def test_firmware_that_crashes_before_confirming_fails_reverted(
    stack: Stack, images: dict[str, bytes]
) -> None:
    vm = stack.device("sensor-a", images["1.0.0"])
    bridge = stack.bridge()
    pub = stack.jobs.publish("app-crash.img", images["crash"])
    stack.jobs.create("crash-1", ["sensor-a"], fota_doc(pub, "1.2.0"))
    e = stack.jobs.wait_status("crash-1", "sensor-a", "FAILED", alive=bridge.alive)
    assert "revert" in e.status_details["reason"], e.status_details
    assert e.status_details["phase"] == "confirming"
    vm.wait_for_log(r"firmware crashed before confirming")
    bridge.terminate()
    assert running(stack.state("sensor-a")) == ("1.0.0", True)


def test_unusable_documents_are_rejected_and_failed_downloads_redacted(
    stack: Stack, images: dict[str, bytes]
) -> None:
    stack.device("sensor-a", images["1.0.0"])
    bridge = stack.bridge()
    pub = stack.jobs.publish("app-1.1.0.img", images["1.1.0"])
    bad = {"bc_idx": 1, "bc_crc": "not-an-md5", "bc_size": -5, "bc_url": pub.url}
    stack.jobs.create("bad-1", ["sensor-a"], bad)
    e = stack.jobs.wait_status("bad-1", "sensor-a", "REJECTED", alive=bridge.alive)
    assert "bc_crc" in e.status_details["reason"], e.status_details
    # Whatever a document holds, the reason is one line AWS accepts (the spy checks each).
    odd = {"operation": "fota", "url": pub.url, "sha256": "\x07\n" + "f" * 3000}
    stack.jobs.create("bad-2", ["sensor-a"], odd)
    e = stack.jobs.wait_status("bad-2", "sensor-a", "REJECTED", alive=bridge.alive)
    assert "sha256" in e.status_details["reason"], e.status_details
    # A presigned URL that does not open: FAILED, and its query string is nowhere.
    missing = {**fota_doc(pub, "1.1.0"), "url": pub.url.replace("app-1.1.0", "absent")}
    stack.jobs.create("missing-1", ["sensor-a"], missing)
    e = stack.jobs.wait_status("missing-1", "sensor-a", "FAILED", alive=bridge.alive)
    assert "404" in e.status_details["reason"] and "absent.img" in e.status_details["reason"]
    assert e.status_details["phase"] == "downloading"


def test_documents_that_cannot_work_for_the_device_are_rejected_before_in_progress(
    stack: Stack, images: dict[str, bytes]
) -> None:
    stack.device("sensor-a", images["1.0.0"])
    bridge = stack.bridge()
    # The board's own figure for its largest image (MCUboot's bootutil_max_image_size).
    limit = load_board(BOARD).max_image_size()
    pub = stack.jobs.publish("app-1.1.0.img", images["1.1.0"])
    stack.jobs.create("too-big-1", ["sensor-a"], {**fota_doc(pub, "1.1.0"), "size": limit + 1})
    e = stack.jobs.wait_status("too-big-1", "sensor-a", "REJECTED", alive=bridge.alive)
    assert "does not fit" in e.status_details["reason"], e.status_details
    assert str(limit) in e.status_details["reason"], e.status_details
    # signed: true, but the file is a raw binary: refused, never signed by the bridge.
    raw = stack.jobs.publish("app-raw.bin", payload(2000, "raw binary"))
    stack.jobs.create("raw-1", ["sensor-a"], {**fota_doc(raw, "1.1.0"), "signed": True})
    e = stack.jobs.wait_status("raw-1", "sensor-a", "REJECTED", alive=bridge.alive)
    assert "not an MCUboot image" in e.status_details["reason"], e.status_details
    sent = [
        body.get("status")
        for _t, topic, body in stack.spy.updates
        if topic.startswith("$aws/things/sensor-a/jobs/too-big-1/")
    ]
    assert sent == ["REJECTED"], sent  # nothing was IN_PROGRESS
    bridge.terminate()
    # The secondary slot was never written: the device holds only its running image.
    assert [s.slot for s in stack.state("sensor-a")] == [0]


def test_one_job_for_two_devices(stack: Stack, images: dict[str, bytes]) -> None:
    a = stack.device("sensor-a", images["1.0.0"])
    b = stack.device("sensor-b", images["1.0.0"])
    bridge = stack.bridge()
    pub = stack.jobs.publish("app-1.2.0.img", images["1.2.0"])
    stack.jobs.create("both-1", ["sensor-a", "sensor-b"], fota_doc(pub, "1.2.0"))
    for thing in ("sensor-a", "sensor-b"):
        stack.jobs.wait_status("both-1", thing, "SUCCEEDED", alive=bridge.alive)
    assert swaps(a) == swaps(b) == ["1.2.0"]


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


# -- mutual TLS -------------------------------------------------------------------------------


def test_mutual_tls(tmp_path: Path, images: dict[str, bytes]) -> None:
    try:
        broker = Mosquitto(tmp_path / "mq", tls=True)
        broker.start()
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    assert broker.pki is not None
    ca = broker.pki.ca
    svc = broker.pki.client("jobs-service")
    gw = broker.pki.client("gateway-01")
    jobs = LocalJobs(tmp_path / "jobs", broker, tls=ServiceTls(ca, svc.cert, svc.key)).start()
    spy = UpdateSpy(broker)
    s = Stack(tmp_path, broker, jobs, spy)
    try:
        s.device("sensor-a", images["1.0.0"])
        bridge = s.bridge(s.config(tls=(ca, gw.cert, gw.key)))
        pub = jobs.publish("app-1.1.0.img", images["1.1.0"])
        jobs.create("tls-1", ["sensor-a"], fota_doc(pub, "1.1.0"))
        jobs.wait_status("tls-1", "sensor-a", "SUCCEEDED", alive=bridge.alive)
        bridge.terminate()

        # Without a client certificate the broker refuses it: one line, exit 2.
        nocert = BridgeProcess(
            s.config("nocert.toml", tls=(ca, None, None)), tmp_path / "nocert.log"
        ).start(wait_connected=False)
        assert nocert.wait_exit() == 2
        lines = nocert.text().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fota-bridge: error: "), lines
        assert "refused the connection" in lines[0] and "client certificate" in lines[0]
        s.spy.check_details()
        assert "X-Amz" not in s.log_text()
    finally:
        for b in s.bridges:
            if b.running:
                b.kill()
        for vm in s.devices.values():
            vm.close()
        spy.close()
        jobs.close()
        broker.stop()


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
