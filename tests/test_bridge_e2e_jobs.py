"""``fota-bridge run`` end to end, the jobs it handles: the demo's four cases (a seed job, a
firmware that crashes, documents that cannot work, one job for two devices) and a job over
mutual TLS.  A real mosquitto, the local jobs service with its HTTPS file server, virtual
MCUs (fota-vmcu on ptys) and the bridge as a real process.

Every test also checks what the bridge told the service (every statusDetails value is a
string AWS accepts) and what it logged (never a presigned URL's query string).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import e2e_kit
import pytest
from e2e_kit import BOARD, Stack, fota_doc, running, seed_doc, swaps
from jobs_device import JobsDevice

from bootloader.formats.layout import load_board
from bootloader.sim.testimages import payload
from harness.bridge import BridgeProcess, LocalJobs, UpdateSpy
from harness.mosquitto import BrokerError, Mosquitto
from localjobs.service import ServiceTls

# the kit's fixtures, bound here for pytest to find
images = e2e_kit.images
stack = e2e_kit.stack


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
