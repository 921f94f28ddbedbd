"""Shared rig for the local jobs service tests: a real mosquitto, a store on a fake clock,
and the service between them, with paho clients playing the devices."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jobs_device import JobsDevice

from harness.mosquitto import BrokerError, Mosquitto
from localjobs.service import JobsService
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
