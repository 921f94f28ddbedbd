"""The whole system on this machine, as ``just demo`` stands it up: mosquitto on a free
port, the local AWS IoT Jobs service with its HTTPS file server, one ``fota-vmcu`` and the
bridge daemon (``python -m host_bridge.cli run --config``), each a child process that a
campaign can kill and start again.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from harness.procs import (
    Proc,
    ProcError,
    Procs,
    find_mosquitto,
    free_port,
    port_open,
    start_vmcu,
    vmcu_cmd,
    wait_until,
)
from localjobs.cli import DB_NAME, FILES_DIR, fota_document
from localjobs.store import JobStore
from reliability.common import PY, ImageSet, SignedImage, command_line, sha256

THING: Final = "rel-device"
TERMINAL: Final = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")
BRIDGE_READY_S: Final = 30.0
TEST_BOOT_RE: Final = re.compile(r"boot \d+: swap type test, running version (\S+)")


def processes(board: str, baud: int) -> list[str]:
    """The stack's commands, with placeholders for the run's files and ports."""
    return [
        "mosquitto -c MOSQUITTO_CONF  (listener MQTT_PORT 127.0.0.1)",
        command_line(
            "localjobs.cli",
            [
                "serve",
                "--broker",
                "127.0.0.1:MQTT_PORT",
                "--state-dir",
                "JOBS_STATE",
                "--http-port",
                "HTTP_PORT",
                "--poll-interval",
                "0.2",
                "--json",
            ],
        ),
        command_line(
            "bootloader.sim.vmcu",
            [
                "--board",
                board,
                "--flash",
                "FLASH",
                "--link",
                "DEVICE_PTY",
                "--baud",
                str(baud),
                "--key",
                "PUBKEY",
                "--load",
                "IMAGE",
            ],
        ),
        command_line("host_bridge.cli", ["run", "--config", "BRIDGE_TOML"])
        + "  (policy confirm = device, confirm_timeout_s 15, boot_timeout_s 20)",
    ]


@dataclass
class JobState:
    status: str
    details: dict[str, str]


class Stack:
    """Start with :meth:`up`; every process is stopped by the ``Procs`` it was given."""

    def __init__(
        self,
        work: Path,
        procs: Procs,
        images: ImageSet,
        board: str,
        baud: int,
        initial: SignedImage,
    ) -> None:
        self.work = work
        self.procs = procs
        self.images = images
        self.board = board
        self.baud = baud
        self.initial = initial
        self.jobs_state = work / "jobs"
        self.flash = work / "device.flash"
        self.mqtt_port = free_port()
        self.http_port = free_port()
        self._store: JobStore | None = None
        self.mosquitto: Proc | None = None
        self.service: Proc | None = None
        self.vmcu: Proc | None = None
        self.bridge: Proc | None = None

    # -- processes ---------------------------------------------------------------------
    def up(self) -> Stack:
        mosquitto = find_mosquitto()
        if mosquitto is None:
            raise ProcError("mosquitto is not installed (apt-get install mosquitto)")
        conf = self.work / "mosquitto.conf"
        conf.write_text(
            f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        self.mosquitto = self.procs.add("mosquitto", [mosquitto, "-c", str(conf)])
        self.start_broker()
        self.service = self.procs.add(
            "jobs-service",
            [
                PY,
                "-m",
                "localjobs.cli",
                "serve",
                "--broker",
                f"127.0.0.1:{self.mqtt_port}",
                "--state-dir",
                str(self.jobs_state),
                "--http-port",
                str(self.http_port),
                "--poll-interval",
                "0.2",
                "--json",
            ],
        )
        self.service.start()
        wait_until("the jobs service's file server", lambda: port_open(self.http_port), 30)
        ca = self.jobs_state / "tls" / "ca.pem"
        wait_until("the file server's CA", ca.exists, 10)
        link = self.work / "device-tty"
        load = self.work / "initial.img"
        load.write_bytes(self.initial.data)
        self.vmcu = self.procs.add(
            "vmcu",
            vmcu_cmd(self.board, self.flash, link, load=load, key=self.images.pub, baud=self.baud),
        )
        start_vmcu(self.vmcu)
        cfg = self.work / "bridge.toml"
        cfg.write_text(
            f'state_dir = "{self.work / "bridge-state"}"\n\n[broker]\nhost = "127.0.0.1"\n'
            f'port = {self.mqtt_port}\nclient_id = "reliability-gateway"\n'
            f'insecure_plaintext = true\n\n[download]\nca = "{ca}"\n\n'
            f'[signing]\ntrusted_keys = ["{self.images.pub}"]\n\n'
            '[policy]\nconfirm = "device"\nconfirm_timeout_s = 15\nboot_timeout_s = 20\n'
            "progress_interval_s = 0.5\n\n"
            f'[[device]]\nthing = "{THING}"\nport = "{link}"\nboard = "{self.board}"\n'
            f"baud = {self.baud}\n"
        )
        self.bridge = self.procs.add(
            "bridge", [PY, "-m", "host_bridge.cli", "run", "--config", str(cfg)]
        )
        self.start_bridge()
        self._store = JobStore(self.jobs_state / DB_NAME)
        return self

    def start_broker(self) -> None:
        assert self.mosquitto is not None
        self.mosquitto.start()
        wait_until("mosquitto", lambda: port_open(self.mqtt_port), 10)

    def start_bridge(self) -> None:
        assert self.bridge is not None
        mark = self.bridge.mark()
        self.bridge.start()
        self.bridge.wait_for(r"connected to", BRIDGE_READY_S, since=mark)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- jobs ----------------------------------------------------------------------------
    @property
    def store(self) -> JobStore:
        assert self._store is not None, "call up() first"
        return self._store

    def create_job(self, job_id: str, image: SignedImage) -> None:
        name = f"{image.version}-{sha256(image.data)[:12]}.img"
        files = self.jobs_state / FILES_DIR
        files.mkdir(parents=True, exist_ok=True)
        if not (files / name).exists():
            (files / name).write_bytes(image.data)
        url = f"https://127.0.0.1:{self.http_port}/files/{name}"
        doc = fota_document(url, len(image.data), sha256(image.data), image.version)
        self.store.create_job(job_id, [THING], doc, None)

    def job(self, job_id: str) -> JobState:
        job = self.store.describe(job_id)
        ex = next(e for e in job.executions if e.thing_name == THING)
        return JobState(ex.status, {str(k): str(v) for k, v in dict(ex.status_details).items()})

    def wait_job(self, job_id: str, timeout_s: float) -> JobState:
        """Poll the store (a file written by another process) until the job is terminal."""
        deadline = time.monotonic() + timeout_s
        state = self.job(job_id)
        while state.status not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.1)
            state = self.job(job_id)
        return state

    def wait_phase(self, job_id: str, phases: tuple[str, ...], timeout_s: float) -> JobState:
        deadline = time.monotonic() + timeout_s
        state = self.job(job_id)
        while (
            state.details.get("phase") not in phases
            and state.status not in TERMINAL
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
            state = self.job(job_id)
        return state

    def test_boots(self, since: int) -> list[str]:
        """Versions booted for a test since a vmcu log mark ("swap type test" lines)."""
        assert self.vmcu is not None
        return [m[1] for line in self.vmcu.lines(since) if (m := TEST_BOOT_RE.search(line))]
