"""The local jobs service's connections to a real mosquitto: each device gets only its own
replies, the service reconnects after a broker restart, and the mutual-TLS listener."""

from __future__ import annotations

import json
from pathlib import Path

import localjobs_service_kit
import pytest
from jobs_device import JobsDevice, tls_refused
from localjobs_service_kit import DOC, FakeClock, Rig, make_rig, running_broker

from localjobs import LocalJobsError
from localjobs.service import JobsService, ServiceTls
from localjobs.store import JobStore

broker = localjobs_service_kit.broker  # the kit's fixture, bound here for pytest to find
rig = localjobs_service_kit.rig  # the kit's fixture, bound here for pytest to find


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
