"""``fota-bridge run``: AWS IoT Jobs in, confirmed firmware out, one worker per device.

Per job: parse the document (unusable -> REJECTED) -> IN_PROGRESS -> download + verify
-> sign if raw -> the device update flow -> SUCCEEDED only when the new image runs
confirmed, else FAILED with the reason.  The phase is persisted (SQLite) and mirrored in
``statusDetails``; a restarted bridge resumes each device from its phase; a job id that
finished is never handled again.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from host_bridge.config import BridgeConfig, DeviceConfig
from host_bridge.device import DeviceUpdater, UpdateOptions
from host_bridge.errors import BridgeError
from host_bridge.image.prepare import load_trusted_keys, prepare
from host_bridge.image.sign import SigningParams
from host_bridge.jobs.client import JobsClient, JobsError
from host_bridge.redact import redact_url
from host_bridge.store import InFlight, Store

log = logging.getLogger("fota.bridge")

TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")
MAX_DETAIL = 1024


class Stop(Exception):  # noqa: N818 - control flow: leave a resumable state
    """The bridge is stopping, or the job was canceled: stop at the next safe point."""


def one_line(text: str, limit: int = MAX_DETAIL) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class DeviceWorker(threading.Thread):
    """Handles one thing's jobs, one at a time, in order of notification."""

    def __init__(self, bridge: Bridge, device: DeviceConfig) -> None:
        super().__init__(name=f"device-{device.thing}", daemon=True)
        self.bridge = bridge
        self.device = device
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.current: str | None = None
        self.canceled = threading.Event()
        self.version: int | None = None
        self._last_progress = 0.0

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
            except Stop:
                log.info("%s: stopped; job %s left resumable", self.device.thing, self.current)
            except Exception:
                log.exception("%s: unexpected error", self.device.thing)
            finally:
                self.current = None
                self.canceled.clear()

    def notify(self, execution: dict[str, Any] | None) -> None:
        job_id = execution.get("jobId") if execution else None
        if self.current is not None and job_id != self.current:
            self.canceled.set()  # confirmed against the service at the next checkpoint
        if execution is not None:
            self.inbox.put(execution)

    # -- one job ---------------------------------------------------------------------
    def handle(self, execution: dict[str, Any]) -> None:
        from host_bridge.jobs.documents import DocumentError, FirmwareJob, parse_document

        thing = self.device.thing
        job_id = str(execution.get("jobId", ""))
        status = str(execution.get("status", "QUEUED"))
        if not job_id or status in TERMINAL:
            return
        if self.bridge.store.finished(thing, job_id):
            log.info("%s: job %s was already handled", thing, job_id)
            return
        self.current = job_id
        self.version = execution.get("versionNumber")
        document = execution.get("jobDocument")
        raw_len = len(json.dumps(document)) if document is not None else 0
        try:
            job = parse_document(
                document, raw_length=raw_len, allow_http=self.bridge.cfg.allow_http,
                allowed_hosts=self.bridge.cfg.allowed_hosts,
            )
        except DocumentError as exc:
            self.finish(job_id, "REJECTED", str(exc), "validating")
            return
        if not isinstance(job, FirmwareJob):
            if self.bridge.on_other_job is not None:
                self.bridge.on_other_job(thing, execution)
                return
            if self.bridge.cfg.other_jobs == "ignore":
                return
            self.finish(job_id, "REJECTED", f"not a firmware job (operation "
                        f"'{getattr(job, 'operation', None)}'); no handler configured", "")
            return
        saved = self.bridge.store.inflight(thing)
        if saved is None or saved.job_id != job_id:
            saved = InFlight(thing, job_id, execution.get("executionNumber"), self.version,
                             "downloading")
            self.bridge.store.save(saved)
        if status == "QUEUED":
            self.report("IN_PROGRESS", {"phase": "downloading"})
        log.info("%s: job %s: firmware %s from %s", thing, job_id, job.version or "?",
                 redact_url(job.url))
        try:
            self.run_job(job_id, job, saved)
        except Stop:
            raise
        except BridgeError as exc:
            self.finish(job_id, "FAILED", str(exc), self.phase_of(thing))

    def phase_of(self, thing: str) -> str:
        saved = self.bridge.store.inflight(thing)
        return saved.phase if saved else ""

    def set_phase(self, saved: InFlight, phase: str, extra: dict[str, str] | None = None) -> None:
        self.checkpoint()
        saved.phase = phase
        self.bridge.store.save(saved)
        details = {"phase": phase}
        details.update(extra or {})
        self.report("IN_PROGRESS", details)

    def run_job(self, job_id: str, job: Any, saved: InFlight) -> None:
        from host_bridge.image.download import Downloader

        cfg = self.bridge.cfg
        thing = self.device.thing
        self.set_phase(saved, "downloading")
        downloader = Downloader(
            cache_dir=cfg.state_dir / "cache", ca_file=cfg.download_ca,
            allow_http=cfg.allow_http, allowed_hosts=cfg.allowed_hosts,
        )
        layout = self.bridge.layout_for(self.device)
        max_size = layout.max_image_size() if layout else None

        def refresh_url() -> str:
            fresh = self.bridge.jobs.describe(thing, job_id)
            from host_bridge.jobs.documents import parse_document as reparse

            doc = fresh.get("jobDocument") if fresh else None
            return str(getattr(reparse(doc, raw_length=len(json.dumps(doc))), "url", job.url))

        target = cfg.state_dir / "downloads" / f"{thing}.img"
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        result = downloader.fetch(
            job, target, max_size=max_size, refresh_url=refresh_url,
            progress=lambda d, t: self.progress("downloading", d, t if t is not None else 0),
        )
        saved.image_sha256 = result.sha256.hex()
        self.set_phase(saved, "verifying")
        data = Path(result.path).read_bytes()
        params = SigningParams.from_layout(layout) if layout else SigningParams()
        if job.signed is False or not data[:4] == b"\x3d\xb8\xf3\x96":
            self.set_phase(saved, "signing")
        image = prepare(
            data, trusted_keys=self.bridge.trusted_keys, signing_key=cfg.signing_key,
            version=job.version, params=params, max_image_size=max_size,
        )
        saved.image_hash = image.hash.hex()
        detail = {"version": image.version, "hash": image.hash.hex()}
        self.set_phase(saved, "uploading", detail)
        client = self.bridge.client_for(self.device)
        opts = UpdateOptions(policy=cfg.policy, confirm_timeout_s=cfg.confirm_timeout_s,
                             boot_timeout_s=cfg.boot_timeout_s)

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase == "uploading":
                self.progress("uploading", done, total, detail)
            elif phase != saved.phase:
                saved.phase = phase
                self.bridge.store.save(saved)
                self.report("IN_PROGRESS", {"phase": phase, **detail})

        try:
            outcome = DeviceUpdater(client, opts, on_progress).update(image)
        finally:
            client.link.close()
        if outcome.status == "confirmed":
            self.finish(job_id, "SUCCEEDED", "", "confirming", detail)
        else:
            self.finish(job_id, "FAILED", outcome.reason or outcome.status, outcome.phase, detail)

    # -- reporting -------------------------------------------------------------------
    def checkpoint(self) -> None:
        if self.bridge.stopping.is_set():
            raise Stop()
        if self.canceled.is_set() and self.current is not None:
            self.canceled.clear()
            try:
                ex = self.bridge.jobs.describe(self.device.thing, self.current)
            except JobsError:
                ex = None
            if ex is None or ex.get("status") in TERMINAL:
                log.info("%s: job %s was canceled; stopping", self.device.thing, self.current)
                self.bridge.store.finish(self.device.thing, self.current, "CANCELED")
                raise Stop()

    def progress(self, phase: str, done: int, total: int,
                 extra: dict[str, str] | None = None) -> None:
        self.checkpoint()
        now = time.monotonic()
        if (total == 0 or done < total) and now - self._last_progress < self.bridge.cfg.progress_interval_s:
            return
        self._last_progress = now
        details = {"phase": phase, "progress": f"{done}/{total}" if total else str(done)}
        details.update(extra or {})
        self.report("IN_PROGRESS", details)

    def report(self, status: str, details: dict[str, str]) -> None:
        details = {k: one_line(v) for k, v in details.items() if v}
        try:
            reply = self.bridge.jobs.update(
                self.device.thing, str(self.current), status, details,
                expected_version=self.version,
                step_timeout_min=self.bridge.cfg.step_timeout_min,
            )
        except JobsError as exc:
            if exc.code == "VersionMismatch" and exc.execution_state:
                self.version = exc.execution_state.get("versionNumber")
                reply = self.bridge.jobs.update(self.device.thing, str(self.current), status,
                                                details, expected_version=self.version)
            elif exc.code in ("InvalidStateTransition", "TerminalStateReached"):
                raise Stop() from exc  # canceled or timed out by the service
            else:
                raise
        state = reply.get("executionState") or {}
        if isinstance(state, dict) and "versionNumber" in state:
            self.version = state["versionNumber"]

    def finish(self, job_id: str, status: str, reason: str, phase: str,
               extra: dict[str, str] | None = None) -> None:
        details = {"phase": phase} if phase else {}
        if reason:
            details["reason"] = one_line(reason)
        details.update(extra or {})
        self.current = job_id
        log.info("%s: job %s %s%s", self.device.thing, job_id, status,
                 f": {one_line(reason)}" if reason else "")
        try:
            self.report(status, details)
        except Stop:
            pass
        self.bridge.store.finish(self.device.thing, job_id, status, reason)


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
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = Store(cfg.state_dir / "bridge.sqlite")
        self.trusted_keys = load_trusted_keys([str(p) for p in cfg.trusted_keys])
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
        from bootloader.layout import load_board

        return load_board(device.board)

    def client_for(self, device: DeviceConfig) -> Any:
        if self._client_factory is not None:
            return self._client_factory(device)
        from host_bridge.smp.client import SmpClient
        from host_bridge.smp.link import SerialLink

        return SmpClient(SerialLink(device.port, device.baud, device.framing))

    def start(self) -> None:
        for w in self.workers.values():
            w.start()
        self.jobs.connect()

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stopping.set()
        deadline = time.monotonic() + timeout_s
        for w in self.workers.values():
            w.join(max(0.1, deadline - time.monotonic()))
        self.jobs.close()
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
