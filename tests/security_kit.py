"""What the security tests share: the test thing, file modes, signed images, a web PKI,
and a daemon rig with a fake Jobs service and a link that must stay silent.
"""

from __future__ import annotations

import contextlib
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from https_server import Pki, make_pki

from bootloader.formats.layout import Layout
from bootloader.sim.testimages import keygen, payload, sign
from host_bridge.config import BridgeConfig, DeviceConfig
from host_bridge.daemon import Bridge
from host_bridge.jobs.client import BrokerConfig
from host_bridge.smp.client import SmpClient

REPO: Final = Path(__file__).resolve().parent.parent
THING: Final = "sensor-1"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class FakeJobs:
    """The Jobs client the daemon talks to: records updates, answers describe."""

    def __init__(self, broker: BrokerConfig, things: list[str], on_next: Any) -> None:
        self.connected = threading.Event()
        self.connected.set()
        self.updates: list[tuple[str, dict[str, str]]] = []
        self.document: dict[str, Any] | None = None

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def update(
        self,
        thing: str,
        job_id: str,
        status: str,
        details: Any = None,
        expected_version: Any = None,
        step_timeout_min: Any = None,
        **kw: Any,
    ) -> dict[str, Any]:
        self.updates.append((status, dict(details or {})))
        return {"executionState": {"status": status, "versionNumber": len(self.updates) + 1}}

    def describe(self, thing: str, job_id: str) -> dict[str, Any] | None:
        return {"status": "IN_PROGRESS", "versionNumber": 1, "jobDocument": self.document}


class RecordingLink:
    """A link that must stay silent: every packet sent is recorded."""

    url, framing, baudrate = "fake://device", "console", 115200

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, packet: bytes) -> None:
        self.sent.append(packet)

    def recv(self, timeout_s: float) -> bytes | None:
        return None

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def reopen(self) -> None:
        pass


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory, tiny: Layout) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("signing")
    trusted, other = keygen(d / "trusted.pem"), keygen(d / "other.pem")
    body = payload(1500, "security")
    return {
        "trusted": trusted,
        "good": sign(body, "1.1.0", tiny, trusted),
        "untrusted": sign(body, "1.1.0", tiny, other),
    }


@pytest.fixture(scope="module")
def web_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("web-pki"))


@contextlib.contextmanager
def daemon_rig(
    state: Path, signing: dict[str, Any], web_pki: Pki
) -> Iterator[tuple[Bridge, list[RecordingLink]]]:
    cfg = BridgeConfig(
        broker=BrokerConfig("127.0.0.1", 1883),
        devices=[DeviceConfig(THING, "/dev/null", board="tiny")],
        state_dir=state,
        trusted_keys=[signing["trusted"]],
        download_ca=web_pki.ca_cert,
        progress_interval_s=0.0,
    )
    links: list[RecordingLink] = []

    def client_for(device: DeviceConfig) -> Any:

        links.append(RecordingLink())
        return SmpClient(links[-1], timeout_s=0.05, retries=0)  # type: ignore[arg-type]

    bridge = Bridge(cfg, jobs_factory=FakeJobs, client_factory=client_for)
    try:
        yield bridge, links
    finally:
        bridge.store.close()


def run_job(bridge: Bridge, document: dict[str, Any], job_id: str = "job-1") -> FakeJobs:
    jobs: FakeJobs = bridge.jobs  # type: ignore[assignment]
    jobs.document = document
    bridge.workers[THING].handle(
        {
            "jobId": job_id,
            "status": "QUEUED",
            "versionNumber": 1,
            "executionNumber": 1,
            "jobDocument": document,
        }
    )
    return jobs
