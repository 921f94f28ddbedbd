"""The whole jobs side on one machine, for end-to-end tests of ``fota-bridge run``.

    with Mosquitto(tmp / "mq") as broker, LocalJobs(tmp / "jobs", broker) as jobs:
        url = jobs.publish("app-1.1.0.img", image)           # the presigned-URL placeholder
        jobs.create("job-1", ["sensor-a"], {"url": url, ...})
        with BridgeProcess(write_config(tmp, broker, jobs, {"sensor-a": vm.link})) as bridge:
            jobs.wait_status("job-1", "sensor-a", "SUCCEEDED")

``LocalJobs`` is the local jobs service in-process (job store, HTTPS file server with
presigned URLs, the MQTT front end); ``BridgeProcess`` is ``python -m host_bridge.cli run``
with its log in a file; ``UpdateSpy`` is a paho client that records every job execution
update any bridge publishes.  Every wait is bounded in time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from harness.mosquitto import Mosquitto
from harness.procs import REPO_ROOT
from localjobs.fileserver import FileServer
from localjobs.model import Execution
from localjobs.service import JobsService, ServiceTls
from localjobs.store import JobStore

TERMINAL: Final = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")
JOB_TIMEOUT_S: Final = 45.0
BRIDGE_START_S: Final = 20.0
BRIDGE_EXIT_S: Final = 20.0
POLL_S: Final = 0.05
DETAIL_KEY: Final = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def placeholder(url: str) -> str:
    """AWS's presigned-URL placeholder around ``url``."""
    return "${aws:iot:s3-presigned-url:" + url + "}"


@dataclass(frozen=True)
class Published:
    url: str  # the placeholder: the service presigns it on every delivery
    size: int
    sha256: str
    md5: str


class LocalJobs:
    """The local jobs service in this process, on ``broker``'s plain or TLS listener."""

    def __init__(
        self,
        directory: Path,
        broker: Mosquitto,
        *,
        tls: ServiceTls | None = None,
        poll_interval_s: float = 0.1,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(directory / "jobs.sqlite3")
        self.files = FileServer(directory / "files", directory)
        port = broker.tls_port if tls is not None and broker.tls_port else broker.port
        self.service = JobsService(
            self.store,
            broker.host,
            port,
            tls,
            presign=self.files.presign,
            poll_interval_s=poll_interval_s,
            keepalive_s=5,
        )

    @property
    def ca(self) -> Path:
        """The file server's CA: the bridge's ``[download] ca``."""
        return self.files.ca_path

    def start(self) -> LocalJobs:
        self.files.start()
        self.service.start()
        return self

    def close(self) -> None:
        self.service.stop()
        self.files.stop()
        self.store.close()

    def __enter__(self) -> LocalJobs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operator ----------------------------------------------------------------------------
    def publish(self, name: str, data: bytes) -> Published:
        (self.files.directory / name).write_bytes(data)
        url = f"https://127.0.0.1:{self.files.port}/files/{name}"
        return Published(
            placeholder(url),
            len(data),
            hashlib.sha256(data).hexdigest(),
            hashlib.md5(data).hexdigest(),
        )

    def create(self, job_id: str, things: list[str], document: dict[str, Any]) -> None:
        self.store.create_job(job_id, things, json.dumps(document))
        self.service.publish_changes()

    def cancel(self, job_id: str, *, force: bool = True) -> None:
        self.store.cancel_job(job_id, force=force)
        self.service.publish_changes()

    def execution(self, job_id: str, thing: str) -> Execution:
        job = self.store.describe(job_id)
        return next(e for e in job.executions if e.thing_name == thing)

    def wait_status(
        self,
        job_id: str,
        thing: str,
        expect: str | None = None,
        timeout_s: float = JOB_TIMEOUT_S,
        alive: Callable[[], None] | None = None,
    ) -> Execution:
        """The execution once terminal; it must be ``expect`` when given."""
        deadline = time.monotonic() + timeout_s
        while True:
            e = self.execution(job_id, thing)
            if e.status in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} on {thing} still {e.status} "
                    f"{dict(e.status_details)} after {timeout_s} s"
                )
            if alive is not None:
                alive()
            time.sleep(POLL_S)
        if expect is not None:
            assert e.status == expect, (e.status, dict(e.status_details))
        return e

    def wait_uploading(
        self, job_id: str, thing: str, *, timeout_s: float = JOB_TIMEOUT_S, at_least: int = 1
    ) -> tuple[int, int]:
        """(done, total) once the execution's progress shows an upload under way."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            e = self.execution(job_id, thing)
            d = e.status_details
            if e.status in TERMINAL:
                raise AssertionError(f"job {job_id} ended ({e.status}) before mid-upload")
            if d.get("phase") == "uploading" and "/" in d.get("progress", ""):
                done, total = (int(v) for v in d["progress"].split("/"))
                if at_least <= done < total:
                    return done, total
            time.sleep(POLL_S)
        raise AssertionError(f"job {job_id} on {thing} never showed an upload in progress")


def write_config(
    path: Path,
    broker: Mosquitto,
    jobs: LocalJobs,
    devices: dict[str, Path],
    *,
    board: str,
    state_dir: Path,
    tls: tuple[str, str | None, str | None] | None = None,
    policy: str = "",
    progress_interval_s: float = 0.3,
    client_id: str = "e2e-gateway",
) -> Path:
    """A bridge.toml for ``devices`` (thing -> pty link); ``tls`` is (ca, cert, key)."""
    if tls is None:
        broker_t = f"port = {broker.port}\ninsecure_plaintext = true\n"
    else:
        ca, cert, key = tls
        broker_t = f'port = {broker.tls_port}\nca = "{ca}"\n'
        broker_t += f'cert = "{cert}"\nkey = "{key}"\n' if cert and key else ""
    text = f'state_dir = "{state_dir}"\n\n[broker]\nhost = "{broker.host}"\n{broker_t}'
    text += f'client_id = "{client_id}"\n\n[download]\nca = "{jobs.ca}"\n\n'
    text += "[policy]\nconfirm_timeout_s = 5\nboot_timeout_s = 15\n"
    text += f"progress_interval_s = {progress_interval_s}\n"
    text += policy
    for thing, link in devices.items():
        text += f'\n[[device]]\nthing = "{thing}"\nport = "{link}"\nboard = "{board}"\n'
    path.write_text(text)
    return path


class BridgeProcess:
    """``fota-bridge run --config CONFIG`` as a process; stdout and stderr go to ``log``."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self.returncode: int | None = None

    def start(self, wait_connected: bool = True) -> BridgeProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self._out = open(self.log, "ab")  # noqa: SIM115 - closed when the process ends
        self._mark = self.log.stat().st_size
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "host_bridge.cli", "run", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
        )
        if wait_connected:
            self.wait_log("connected to", BRIDGE_START_S)
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def text(self, since_start: bool = False) -> str:
        data = self.log.read_bytes()
        return (
            data[self._mark :].decode(errors="replace")
            if since_start
            else data.decode(errors="replace")
        )

    def alive(self) -> None:
        """Raise (with the log) if the bridge has exited."""
        if not self.running:
            raise AssertionError(
                f"the bridge exited ({self.returncode_now()}):\n{self.text()[-3000:]}"
            )

    def returncode_now(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def wait_log(self, text: str, timeout_s: float = JOB_TIMEOUT_S, count: int = 1) -> None:
        """Until ``text`` appears ``count`` times in this run's log."""
        deadline = time.monotonic() + timeout_s
        while self.text(since_start=True).count(text) < count:
            self.alive()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the bridge did not log {text!r} within {timeout_s} s:\n{self.text()[-3000:]}"
                )
            time.sleep(POLL_S)

    def wait_exit(self, timeout_s: float = BRIDGE_EXIT_S) -> int:
        assert self._proc is not None
        try:
            self.returncode = self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
            raise AssertionError(
                f"the bridge did not exit within {timeout_s} s:\n{self.text()[-3000:]}"
            ) from None
        finally:
            if self._out is not None:
                self._out.close()
        return self.returncode

    def signal(self, sig: signal.Signals) -> int:
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
        return self.wait_exit()

    def terminate(self) -> int:
        return self.signal(signal.SIGTERM)

    def kill(self) -> int:
        return self.signal(signal.SIGKILL)

    def __enter__(self) -> BridgeProcess:
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self.terminate()
            except AssertionError:
                if exc[0] is None:
                    raise


class UpdateSpy:
    """Records every ``$aws/things/+/jobs/+/update`` request published on the broker."""

    def __init__(self, broker: Mosquitto) -> None:
        self.updates: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"spy-{uuid.uuid4().hex[:6]}"
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *a: c.subscribe("$aws/things/+/jobs/+/update", 1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.loop_start()
        if not self._ready.wait(5.0):
            self.close()
            raise AssertionError("the update spy could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = {"unparseable": msg.payload.decode(errors="replace")}
        with self._lock:
            self.updates.append((time.monotonic(), msg.topic, body))

    def bodies(self, thing: str | None = None) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return [
                (t, b)
                for t, topic, b in self.updates
                if thing is None or topic.startswith(f"$aws/things/{thing}/")
            ]

    def check_details(self) -> None:
        """Every statusDetails sent is what AWS accepts, and holds no URL query string."""
        for _t, body in self.bodies():
            details = body.get("statusDetails", {})
            assert isinstance(details, dict), body
            for key, value in details.items():
                assert DETAIL_KEY.fullmatch(key), (key, body)
                assert isinstance(value, str) and 1 <= len(value) <= 1024, (key, value)
                assert not CONTROL.search(value), (key, value)
                assert "X-Amz" not in value, (key, value)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
