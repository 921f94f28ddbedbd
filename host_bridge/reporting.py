"""Telling AWS IoT Jobs how a job goes: progress, phases and the final status.

Progress and phase updates are best effort (skipped while the broker is away: the next one
carries the whole picture); the final status is persisted first and then delivered, and
delivered again whenever the service shows the execution to the bridge as still pending
(after a reconnect, a service restart, a bridge restart).  A rejection that means the service
ended the execution (canceled, timed out, removed) stops the job at its next safe point.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Protocol

from host_bridge.config import BridgeConfig, DeviceConfig
from host_bridge.jobs.client import RETRYABLE, JobsClient, JobsError
from host_bridge.redact import redact_text
from host_bridge.store import Store

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


class BridgeHost(Protocol):
    """What a device worker needs from the daemon that runs it."""

    cfg: BridgeConfig
    jobs: JobsClient
    store: Store
    stopping: threading.Event
    trusted_keys: list[Any]
    on_other_job: Any

    def layout_for(self, device: DeviceConfig) -> Any: ...

    def client_for(self, device: DeviceConfig) -> Any: ...


class JobReporting:
    """The reporting half of a device worker (see :class:`host_bridge.daemon.DeviceWorker`)."""

    bridge: BridgeHost
    device: DeviceConfig
    current: str | None
    finished: bool
    canceled: threading.Event
    version: int | None
    _last_progress: float
    _last_saved: float
    _quiet_until: float

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
