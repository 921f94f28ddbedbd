"""``fota-bridge run``: AWS IoT Jobs in, confirmed firmware out, one worker per device.

The daemon's lifecycle: one MQTT connection (:mod:`host_bridge.jobs.client`), one
:class:`DeviceWorker` thread per device taking that device's jobs one at a time.  What a job
goes through is in :mod:`host_bridge.pipeline`; how it is reported, in
:mod:`host_bridge.reporting`.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from bootloader.formats.layout import load_board
from host_bridge.config import BridgeConfig, DeviceConfig, prepare_state_dir
from host_bridge.image.prepare import load_trusted_keys
from host_bridge.jobs.client import JobsClient
from host_bridge.pipeline import JobPipeline
from host_bridge.reporting import Stop
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink
from host_bridge.store import Store

log = logging.getLogger("fota.bridge")


class DeviceWorker(JobPipeline, threading.Thread):
    """Handles one thing's jobs, one at a time, in order of notification."""

    def __init__(self, bridge: Bridge, device: DeviceConfig) -> None:
        super().__init__(name=f"device-{device.thing}", daemon=True)
        self.bridge = bridge
        self.device = device
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.current: str | None = None
        self.finished = False  # the current job's outcome is recorded
        self.canceled = threading.Event()
        self.version: int | None = None
        self._last_progress = 0.0
        self._last_saved = 0.0
        self._quiet_until = 0.0

    # -- loop ------------------------------------------------------------------------
    def run(self) -> None:
        while not self.bridge.stopping.is_set():
            try:
                execution = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if execution is None:
                continue
            try:
                self.handle(execution)
            except Stop as stop:
                self.stopped(stop)
            except Exception:
                log.exception("%s: unexpected error", self.device.thing)
            finally:
                self.current = None
                self.finished = False
                self.canceled.clear()

    def stopped(self, stop: Stop) -> None:
        thing, job_id = self.device.thing, self.current
        if stop.status is None or job_id is None:
            log.info("%s: stopped; job %s left resumable", thing, job_id)
            return
        log.info("%s: job %s is %s at the service; stopped", thing, job_id, stop.status)
        self.bridge.store.finish(thing, job_id, stop.status, "ended by the service")

    def notify(self, execution: dict[str, Any] | None) -> None:
        job_id = execution.get("jobId") if execution else None
        current = self.current
        if current is not None and job_id != current:
            self.canceled.set()  # confirmed against the service at the next checkpoint
        if execution is not None and (job_id != current or self.finished):
            # The job in hand comes again after every reconnect ($next/get): not a new one.
            self.inbox.put(execution)


class Bridge:
    """The daemon: one MQTT connection, one worker per device."""

    def __init__(
        self,
        cfg: BridgeConfig,
        jobs_factory: Callable[..., JobsClient] = JobsClient,
        client_factory: Callable[[DeviceConfig], Any] | None = None,
        on_other_job: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.stopping = threading.Event()
        prepare_state_dir(cfg.state_dir)  # 0700, also when it already existed
        self.trusted_keys = load_trusted_keys([str(p) for p in cfg.trusted_keys])
        self.store = Store(cfg.state_dir / "bridge.sqlite")
        self.workers = {d.thing: DeviceWorker(self, d) for d in cfg.devices}
        self.on_other_job = on_other_job
        self._client_factory = client_factory
        self.jobs = jobs_factory(cfg.broker, list(self.workers), self._on_next_job)

    def _on_next_job(self, thing: str, execution: dict[str, Any] | None) -> None:
        worker = self.workers.get(thing)
        if worker is not None:
            worker.notify(execution)

    def layout_for(self, device: DeviceConfig) -> Any:
        if not device.board:
            return None

        return load_board(device.board)

    def client_for(self, device: DeviceConfig) -> Any:
        if self._client_factory is not None:
            return self._client_factory(device)

        return SmpClient(SerialLink(device.port, device.baud, device.framing))

    def start(self) -> None:
        """Connect (JobsError if the broker refuses), then start the workers; what the
        broker delivers meanwhile waits in their inboxes."""
        try:
            self.jobs.connect()
        except BaseException:
            self.store.close()
            raise
        for w in self.workers.values():
            w.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stopping.set()
        deadline = time.monotonic() + timeout_s
        for w in self.workers.values():
            if w.is_alive():
                w.join(max(0.1, deadline - time.monotonic()))
        self.jobs.close()
        if not any(w.is_alive() for w in self.workers.values()):
            self.store.close()

    def run_forever(self) -> int:
        done = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            log.info("signal %d: finishing the current step", signum)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not done.wait(0.5):
            pass
        self.stop()
        return 0
