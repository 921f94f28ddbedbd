"""``fota-bridge run``: AWS IoT Jobs in, confirmed firmware out, one worker per device.

Per job: parse the document (unusable -> REJECTED) -> IN_PROGRESS -> download + verify
-> sign if raw -> the device update flow -> SUCCEEDED only when the new image runs
confirmed, else FAILED with the reason.  The phase is persisted (SQLite) and mirrored in
``statusDetails``; a restarted bridge resumes each device from its phase; a job id that
finished is never handled again.

Reporting: progress and phase updates are best effort (skipped while the broker is
away: the next one carries the whole picture); the final status is persisted first and
then delivered, and delivered again whenever the service shows the execution to the
bridge as still pending (after a reconnect, a service restart, a bridge restart).
"""

from __future__ import annotations

import logging
import queue
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bootloader.formats.layout import load_board
from fota_common.errors import BridgeError
from host_bridge.config import BridgeConfig, DeviceConfig, prepare_state_dir
from host_bridge.device import DeviceUpdater, UpdateOptions
from host_bridge.image.download import Downloader
from host_bridge.image.prepare import is_mcuboot_image, load_trusted_keys, prepare
from host_bridge.image.sign import SigningParams
from host_bridge.jobs.client import RETRYABLE, JobsClient, JobsError
from host_bridge.jobs.documents import DocumentError, FirmwareJob, parse_document
from host_bridge.jobs.received import DOCUMENT_CHARS
from host_bridge.redact import redact_text, redact_url
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink
from host_bridge.store import InFlight, Store

log = logging.getLogger("fota.bridge")

TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")
DEVICE_TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED")  # what the bridge itself reports
MAX_DETAIL = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
BEST_EFFORT_TIMEOUT_S = 5.0  # a progress report waits this long for its reply, no retries
QUIET_AFTER_FAILURE_S = 10.0  # then progress reports are skipped for this long
FINAL_ATTEMPTS = 3  # deliveries of a final status before waiting for the next notification
FINAL_RETRY_PAUSE_S = 1.0


class Stop(Exception):  # control flow, not an error
    """Stop at the next safe point: the bridge is stopping (``status`` None: the job stays
    resumable), or the service ended the execution (``status``: CANCELED, TIMED_OUT, ...)."""

    def __init__(self, status: str | None = None) -> None:
        super().__init__(status or "stopping")
        self.status = status


# Rejections that mean the execution is over (or gone) at the service.
ENDED = ("TerminalStateReached", "ResourceNotFound")


def ended_status(exc: JobsError) -> str:
    """The status the service ended an execution with, as far as its rejection tells."""
    if exc.code == "ResourceNotFound":
        return "REMOVED"
    state = exc.execution_state if isinstance(exc.execution_state, dict) else {}
    if str(state.get("status")) in TERMINAL:
        return str(state["status"])
    named = [w for w in re.findall(r"[A-Z_]{6,}", str(exc)) if w in TERMINAL]
    return named[-1] if named else "CANCELED"


def one_line(text: object, limit: int = MAX_DETAIL) -> str:
    """A statusDetails value: one line, no control characters, no URL query strings, at
    most ``limit`` characters."""
    flat = " ".join(_CONTROL.sub(" ", redact_text(str(text))).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def clean_details(details: dict[str, Any]) -> dict[str, str]:
    """statusDetails as AWS takes them: string values of 1-1024 characters."""
    out = {}
    for key, value in details.items():
        if value is None:
            continue
        text = one_line(value)
        if text:
            out[str(key)] = text
    return out


def too_large_for(job: FirmwareJob, layout: Any) -> str | None:
    """Why the document's image cannot fit the device's slot, or None (size unknown, or fits).

    A raw binary (``signed: false``) grows by at least the image header when it is signed.
    """
    if job.size is None or layout is None:
        return None
    limit = int(layout.max_image_size())
    size = job.size + (int(layout.header_size) if job.signed is False else 0)
    if size <= limit:
        return None
    what = (
        f"{job.size} bytes + a {layout.header_size}-byte header"
        if job.signed is False
        else (f"{job.size} bytes")
    )
    return (
        f"the image ({what}) does not fit the device's slot: {layout.name} holds at most "
        f"{limit} bytes per image"
    )


def received_chars(execution: dict[str, Any] | None) -> int | None:
    """The job document's length as received (see host_bridge.jobs.received), if known."""
    length = execution.get(DOCUMENT_CHARS) if execution is not None else None
    return length if isinstance(length, int) else None


class DeviceWorker(threading.Thread):
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

    # -- one job ---------------------------------------------------------------------
    def handle(self, execution: dict[str, Any]) -> None:

        thing = self.device.thing
        job_id = str(execution.get("jobId", ""))
        status = str(execution.get("status", "QUEUED"))
        if not job_id or status in TERMINAL:
            return
        version = execution.get("versionNumber")
        self.version = version if isinstance(version, int) else None
        done = self.bridge.store.outcome(thing, job_id)
        if done is not None:
            log.info("%s: job %s was already handled (%s)", thing, job_id, done[0])
            if done[0] in DEVICE_TERMINAL:
                self.current = job_id
                self.redeliver(job_id, *done)
            return
        self.current = job_id
        document = execution.get("jobDocument")
        raw_len = received_chars(execution)
        cfg = self.bridge.cfg
        try:
            job = parse_document(
                document,
                raw_length=raw_len,
                allow_http=cfg.allow_http,
                allowed_hosts=cfg.allowed_hosts,
            )
        except DocumentError as exc:
            self.finish(job_id, "REJECTED", str(exc), "validating")
            return
        if not isinstance(job, FirmwareJob):
            if self.bridge.on_other_job is not None:
                self.bridge.on_other_job(thing, execution)
                return
            if cfg.other_jobs == "ignore":
                return
            self.finish(
                job_id,
                "REJECTED",
                f"not a firmware job (operation "
                f"'{getattr(job, 'operation', None)}'); no handler configured",
                "",
            )
            return
        problem = too_large_for(job, self.bridge.layout_for(self.device))
        if problem is not None:  # the document cannot work for this device: before IN_PROGRESS
            self.finish(job_id, "REJECTED", problem, "validating")
            return
        saved = self.bridge.store.inflight(thing)
        if saved is None or saved.job_id != job_id:
            saved = InFlight(
                thing, job_id, execution.get("executionNumber"), self.version, "downloading"
            )
            self.bridge.store.save(saved)
        elif saved.phase != "downloading":
            log.info(
                "%s: job %s: resuming (was %s at %d bytes)",
                thing,
                job_id,
                saved.phase,
                saved.offset,
            )
        log.info(
            "%s: job %s: firmware %s from %s",
            thing,
            job_id,
            job.version or "?",
            redact_url(job.url),
        )
        try:
            self.run_job(job_id, job, saved)
        except Stop:
            raise
        except DocumentError as exc:  # the file contradicts its document: retrying cannot help
            self.finish(job_id, "REJECTED", str(exc), self.phase_of(thing))
        except BridgeError as exc:
            self.finish(job_id, "FAILED", str(exc), self.phase_of(thing))
        except Exception as exc:  # a bug must not leave the job IN_PROGRESS forever
            log.exception("%s: job %s: unexpected error", thing, job_id)
            self.finish(
                job_id,
                "FAILED",
                f"bridge internal error: {type(exc).__name__}: {exc}",
                self.phase_of(thing),
            )

    def phase_of(self, thing: str) -> str:
        saved = self.bridge.store.inflight(thing)
        return saved.phase if saved else ""

    def set_phase(self, saved: InFlight, phase: str, extra: dict[str, str] | None = None) -> None:
        self.checkpoint()
        saved.phase = phase
        self.bridge.store.save(saved)
        details = {"phase": phase}
        details.update(extra or {})
        self.tell(details)

    def run_job(self, job_id: str, job: Any, saved: InFlight) -> None:

        cfg = self.bridge.cfg
        thing = self.device.thing
        self.set_phase(saved, "downloading")
        downloader = Downloader(
            cache_dir=cfg.state_dir / "cache",
            ca_file=cfg.download_ca,
            allow_http=cfg.allow_http,
            allowed_hosts=cfg.allowed_hosts,
        )
        layout = self.bridge.layout_for(self.device)
        max_size = layout.max_image_size() if layout else None

        def refresh_url() -> str:
            fresh = self.bridge.jobs.describe(thing, job_id)
            doc = fresh.get("jobDocument") if fresh else None
            again = parse_document(
                doc,
                raw_length=received_chars(fresh),
                allow_http=cfg.allow_http,
                allowed_hosts=cfg.allowed_hosts,
            )
            return str(getattr(again, "url", job.url))

        target = cfg.state_dir / "downloads" / f"{thing}.img"
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        result = downloader.fetch(
            job,
            target,
            max_size=max_size,
            refresh_url=refresh_url,
            progress=lambda d, t: self.progress("downloading", d, t if t is not None else 0),
        )
        saved.image_sha256 = result.sha256.hex()
        self.set_phase(saved, "verifying")
        data = Path(result.path).read_bytes()
        params = SigningParams.from_layout(layout) if layout else SigningParams()
        if job.signed is True and not is_mcuboot_image(data):
            raise DocumentError(
                "the job says signed: true but the file is not an MCUboot image "
                "(no image header); it is not signed here: sign it, or set signed: false"
            )
        if job.signed is False or not is_mcuboot_image(data):
            self.set_phase(saved, "signing")
        image = prepare(
            data,
            trusted_keys=self.bridge.trusted_keys,
            signing_key=cfg.signing_key,
            version=job.version,
            params=params,
            max_image_size=max_size,
        )
        saved.image_hash = image.hash.hex()
        detail = {"version": image.version, "hash": image.hash.hex()}
        self.set_phase(saved, "uploading", detail)
        client = self.bridge.client_for(self.device)
        opts = UpdateOptions(
            policy=cfg.policy,
            confirm_timeout_s=cfg.confirm_timeout_s,
            boot_timeout_s=cfg.boot_timeout_s,
        )

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase == "uploading":
                self.save_offset(saved, done)
                self.progress("uploading", done, total, detail)
            elif phase != saved.phase:
                saved.phase = phase
                self.bridge.store.save(saved)
                self.tell({"phase": phase, **detail})

        try:
            outcome = DeviceUpdater(client, opts, on_progress).update(image)
        finally:
            client.link.close()
        up = outcome.upload
        if up is not None:
            log.info(
                "%s: job %s: uploaded %d bytes in %.1f s%s",
                thing,
                job_id,
                up.size,
                up.seconds,
                f"; resumed upload at {up.resumed_from}" if up.resumed_from else "",
            )
        if outcome.status == "confirmed":
            self.finish(job_id, "SUCCEEDED", "", "confirming", detail)
        else:
            self.finish(job_id, "FAILED", outcome.reason or outcome.status, outcome.phase, detail)

    def save_offset(self, saved: InFlight, done: int) -> None:
        now = time.monotonic()
        if now - self._last_saved >= 1.0:
            self._last_saved = now
            saved.offset = done
            self.bridge.store.save(saved)

    # -- reporting -------------------------------------------------------------------
    def checkpoint(self) -> None:
        if self.bridge.stopping.is_set():
            raise Stop()
        if self.canceled.is_set() and self.current is not None:
            self.canceled.clear()
            try:
                ex = self.bridge.jobs.describe(self.device.thing, self.current)
            except JobsError as exc:
                if exc.code in ENDED:
                    log.info(
                        "%s: job %s has ended at the service; stopping",
                        self.device.thing,
                        self.current,
                    )
                    raise Stop(ended_status(exc)) from exc
                log.warning("%s: cannot check job %s: %s", self.device.thing, self.current, exc)
                self.canceled.set()  # ask again at the next checkpoint
                return
            status = str(ex.get("status")) if ex else "REMOVED"
            if status in TERMINAL:
                log.info("%s: job %s was %s; stopping", self.device.thing, self.current, status)
                raise Stop(status)

    def progress(
        self, phase: str, done: int, total: int, extra: dict[str, str] | None = None
    ) -> None:
        self.checkpoint()
        now = time.monotonic()
        if (
            total == 0 or done < total
        ) and now - self._last_progress < self.bridge.cfg.progress_interval_s:
            return
        self._last_progress = now
        details = {"phase": phase, "progress": f"{done}/{total}" if total else str(done)}
        details.update(extra or {})
        self.tell(details)

    def tell(self, details: dict[str, str]) -> None:
        """An IN_PROGRESS update, best effort: never fails or stalls the job for long."""
        if time.monotonic() < self._quiet_until or not self.bridge.jobs.connected.is_set():
            return
        try:
            self.report("IN_PROGRESS", details, timeout_s=BEST_EFFORT_TIMEOUT_S, retries=0)
        except JobsError as exc:
            self._quiet_until = time.monotonic() + QUIET_AFTER_FAILURE_S
            log.warning(
                "%s: job %s: status update not delivered (%s)", self.device.thing, self.current, exc
            )

    def report(
        self, status: str, details: dict[str, str], *, timeout_s: float = 10.0, retries: int = 3
    ) -> None:
        """Send ``status`` with ``details``; raise Stop(status) if the service ended the
        execution meanwhile, JobsError if it could not be delivered."""
        clean = clean_details(details)
        thing, job_id = self.device.thing, str(self.current)
        reply: dict[str, Any] = {}
        for attempt in range(4):
            try:
                reply = self.bridge.jobs.update(
                    thing,
                    job_id,
                    status,
                    clean,
                    expected_version=self.version,
                    step_timeout_min=self.bridge.cfg.step_timeout_min,
                    timeout_s=timeout_s,
                    retries=retries,
                )
                break
            except JobsError as exc:
                state = exc.execution_state if isinstance(exc.execution_state, dict) else {}
                now = str(state.get("status", ""))
                if exc.code == "VersionMismatch" and attempt < 3:
                    if now in TERMINAL:
                        if now == status:
                            return  # an earlier try of this very update got through
                        raise Stop(now) from exc
                    number = state.get("versionNumber")
                    self.version = number if isinstance(number, int) else None
                    continue
                if exc.code in ("TerminalStateReached", "InvalidStateTransition"):
                    if now == status:
                        return
                    raise Stop(ended_status(exc)) from exc
                raise
        state = reply.get("executionState") or {}
        if isinstance(state, dict) and isinstance(state.get("versionNumber"), int):
            self.version = state["versionNumber"]

    def finish(
        self, job_id: str, status: str, reason: str, phase: str, extra: dict[str, str] | None = None
    ) -> None:
        """Record the outcome, then deliver it (again later if the broker is away)."""
        reason = one_line(reason)
        details = {"phase": phase} if phase else {}
        if reason:
            details["reason"] = reason
        details.update(extra or {})
        self.current = job_id
        self.bridge.store.finish(self.device.thing, job_id, status, reason)
        self.finished = True
        log.info(
            "%s: job %s %s%s", self.device.thing, job_id, status, f": {reason}" if reason else ""
        )
        self.deliver(status, details)

    def deliver(self, status: str, details: dict[str, str]) -> None:
        for attempt in range(1, FINAL_ATTEMPTS + 1):
            try:
                self.report(status, details)
                return
            except Stop:
                return  # the service had ended it already
            except JobsError as exc:
                if exc.code and exc.code not in RETRYABLE:
                    log.error(
                        "%s: job %s: the service refused %s: %s",
                        self.device.thing,
                        self.current,
                        status,
                        exc,
                    )
                    return
                last = attempt == FINAL_ATTEMPTS
                log.warning(
                    "%s: job %s: %s not delivered (%s)%s",
                    self.device.thing,
                    self.current,
                    status,
                    exc,
                    "; sent again when the service next shows the job" if last else "",
                )
                if last or self.bridge.stopping.wait(FINAL_RETRY_PAUSE_S):
                    return

    def redeliver(self, job_id: str, status: str, reason: str) -> None:
        """The service still shows a job this bridge finished: tell it the outcome again."""
        try:
            ex = self.bridge.jobs.describe(self.device.thing, job_id)
        except JobsError as exc:
            if exc.code not in ENDED:
                log.warning("%s: cannot check job %s: %s", self.device.thing, job_id, exc)
            return
        if ex is None or str(ex.get("status")) in TERMINAL:
            return
        number = ex.get("versionNumber")
        self.version = number if isinstance(number, int) else None
        log.info(
            "%s: job %s: the service still has it %s; reporting %s again",
            self.device.thing,
            job_id,
            ex.get("status"),
            status,
        )
        self.deliver(status, {"reason": reason} if reason else {})


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
