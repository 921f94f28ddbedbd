"""What the ``fota-bridge run`` end-to-end tests share: their images and job documents, and the
:class:`Stack` a test runs on (a real mosquitto, the local jobs service with its HTTPS file
server, virtual MCUs on ptys and bridges as real processes).

The ``stack`` fixture also checks, once a test is done, what the bridge told the service
(every statusDetails value is a string AWS accepts) and what it logged (never a presigned
URL's query string, never a traceback).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from bootloader.formats.layout import load_board
from bootloader.sim.testimages import payload, sign
from harness.bridge import BridgeProcess, LocalJobs, Published, UpdateSpy, write_config
from harness.mosquitto import BrokerError, Mosquitto
from harness.vmcu import Vmcu
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink

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
