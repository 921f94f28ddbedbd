"""The AWS IoT Jobs device API as data: statuses, the transition table, limits, payloads.

Pure: no I/O.  The store applies these rules, the MQTT front end renders these payloads.
Expected refusals are :class:`Rejection` values carrying AWS's error codes; nothing here
raises for a device's bad request.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

# -- statuses ------------------------------------------------------------------------------
QUEUED: Final = "QUEUED"
IN_PROGRESS: Final = "IN_PROGRESS"
SUCCEEDED: Final = "SUCCEEDED"
FAILED: Final = "FAILED"
REJECTED: Final = "REJECTED"
TIMED_OUT: Final = "TIMED_OUT"
CANCELED: Final = "CANCELED"
REMOVED: Final = "REMOVED"

STATUSES: Final = (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, REJECTED, TIMED_OUT, CANCELED, REMOVED)
PENDING: Final = frozenset({QUEUED, IN_PROGRESS})
TERMINAL: Final = frozenset(STATUSES) - PENDING
# What a device may ask for in an update; the others are set by the service only.
DEVICE_STATUSES: Final = (IN_PROGRESS, SUCCEEDED, FAILED, REJECTED)

# The device's transitions, (from, to).  Everything else out of a pending state is an
# InvalidRequest (a status the device may not set); anything out of a terminal state is an
# InvalidStateTransition.
ALLOWED: Final = frozenset(
    {
        (QUEUED, IN_PROGRESS),
        (QUEUED, SUCCEEDED),
        (QUEUED, FAILED),
        (QUEUED, REJECTED),
        (IN_PROGRESS, IN_PROGRESS),
        (IN_PROGRESS, SUCCEEDED),
        (IN_PROGRESS, FAILED),
        (IN_PROGRESS, REJECTED),
    }
)

# Job (not execution) statuses.
JOB_IN_PROGRESS: Final = "IN_PROGRESS"
JOB_CANCELED: Final = "CANCELED"
JOB_COMPLETED: Final = "COMPLETED"

# -- error codes (the `code` of a /rejected reply) -----------------------------------------
INVALID_TOPIC: Final = "InvalidTopic"
INVALID_JSON: Final = "InvalidJson"
INVALID_REQUEST: Final = "InvalidRequest"
INVALID_STATE_TRANSITION: Final = "InvalidStateTransition"
RESOURCE_NOT_FOUND: Final = "ResourceNotFound"
VERSION_MISMATCH: Final = "VersionMismatch"
INTERNAL_ERROR: Final = "InternalError"
REQUEST_THROTTLED: Final = "RequestThrottled"
TERMINAL_STATE_REACHED: Final = "TerminalStateReached"

ERROR_CODES: Final = (
    INVALID_TOPIC,
    INVALID_JSON,
    INVALID_REQUEST,
    INVALID_STATE_TRANSITION,
    RESOURCE_NOT_FOUND,
    VERSION_MISMATCH,
    INTERNAL_ERROR,
    REQUEST_THROTTLED,
    TERMINAL_STATE_REACHED,
)

# -- limits --------------------------------------------------------------------------------
MAX_DOCUMENT_CHARS: Final = 32_768
MAX_PENDING_LISTED: Final = 10  # executions in a get reply or a notify message
MIN_STEP_TIMEOUT: Final = 1
MAX_STEP_TIMEOUT: Final = 10_080  # minutes (7 days)
CANCEL_STEP_TIMER: Final = -1  # stepTimeoutInMinutes in an update: stop the step timer
MAX_CLIENT_TOKEN: Final = 64
NEXT: Final = "$next"

JOB_ID_RE: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
THING_NAME_RE: Final = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
DETAIL_KEY_RE: Final = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
MAX_DETAIL_VALUE: Final = 1024
CLIENT_TOKEN_RE: Final = re.compile(r"[\x21-\x7e]{1,64}")
PRESIGNED_RE: Final = re.compile(r"\$\{aws:iot:s3-presigned-url:([^}]*)\}")


def _control_char(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o < 0xA0 or ch in "\u2028\u2029"


# -- validation: None when fine, else the reason ---------------------------------------------
def job_id_problem(job_id: object) -> str | None:
    if isinstance(job_id, str) and JOB_ID_RE.fullmatch(job_id):
        return None
    return f"jobId {job_id!r} must be 1-64 characters of [a-zA-Z0-9_-]"


def thing_name_problem(thing: object) -> str | None:
    if isinstance(thing, str) and THING_NAME_RE.fullmatch(thing):
        return None
    return f"thingName {thing!r} must be 1-128 characters of [a-zA-Z0-9:_-]"


def status_details_problem(details: object) -> str | None:
    if not isinstance(details, Mapping):
        return "statusDetails must be an object of string values"
    for key, value in details.items():
        if not isinstance(key, str) or not DETAIL_KEY_RE.fullmatch(key):
            return f"statusDetails key {key!r} must be 1-128 characters of [a-zA-Z0-9:_-]"
        if not isinstance(value, str):
            return f"statusDetails value of {key!r} must be a string"
        if not 1 <= len(value) <= MAX_DETAIL_VALUE:
            return f"statusDetails value of {key!r} must be 1-{MAX_DETAIL_VALUE} characters"
        if any(_control_char(ch) for ch in value):
            return f"statusDetails value of {key!r} must not hold control characters"
    return None


def step_timeout_problem(minutes: object, *, allow_cancel: bool = False) -> str | None:
    if isinstance(minutes, int) and not isinstance(minutes, bool):
        if MIN_STEP_TIMEOUT <= minutes <= MAX_STEP_TIMEOUT:
            return None
        if allow_cancel and minutes == CANCEL_STEP_TIMER:
            return None
    extra = " (or -1 to stop the timer)" if allow_cancel else ""
    return f"stepTimeoutInMinutes must be {MIN_STEP_TIMEOUT}-{MAX_STEP_TIMEOUT}{extra}"


def request_problem(
    thing: str,
    job_id: str | None = None,
    *,
    status: str | None = None,
    details: object = None,
    step_timeout: object = None,
) -> str | None:
    """The first problem of a device request's values (an InvalidRequest), or None.

    ``job_id`` may be ``$next`` unless ``status`` is given (updates name their job);
    ``stepTimeoutInMinutes`` may be -1 (stop the timer) only in an update.
    """
    if problem := thing_name_problem(thing):
        return problem
    named = job_id is not None and (job_id != NEXT or status is not None)
    if named and (problem := job_id_problem(job_id)):
        return problem
    if status is not None and status not in DEVICE_STATUSES:
        return f"status {status!r} must be one of {', '.join(DEVICE_STATUSES)}"
    if details is not None and (problem := status_details_problem(details)):
        return problem
    if step_timeout is not None:
        return step_timeout_problem(step_timeout, allow_cancel=status is not None)
    return None


def document_problem(document: str) -> str | None:
    if len(document) > MAX_DOCUMENT_CHARS:
        return f"the job document has {len(document)} characters (at most {MAX_DOCUMENT_CHARS})"
    try:
        parsed = json.loads(document)
    except ValueError as exc:
        return f"the job document is not JSON: {exc}"
    if not isinstance(parsed, dict):
        return "the job document must be a JSON object"
    return None


# -- values ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rejection:
    """A refused request: AWS's error code, a message, and (for InvalidStateTransition and
    VersionMismatch) the execution's current state."""

    code: str
    message: str
    execution_state: dict[str, Any] | None = None

    def payload(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.execution_state is not None:
            doc["executionState"] = self.execution_state
        return doc


@dataclass(frozen=True)
class Execution:
    """One job execution: the job's run on one thing."""

    job_id: str
    thing_name: str
    status: str
    status_details: dict[str, str]
    version_number: int
    execution_number: int
    queued_at: float
    last_updated_at: float
    document: str = "{}"
    started_at: float | None = None
    step_timeout_minutes: int | None = None
    deadline: float | None = None
    job_seq: int = 0
    job_step_timeout_minutes: int | None = None  # the job's default step timer

    @property
    def pending(self) -> bool:
        return self.status in PENDING

    def job_document(self) -> Any:
        return json.loads(self.document)

    def state(self) -> dict[str, Any]:
        """JobExecutionState."""
        return {
            "status": self.status,
            "statusDetails": dict(self.status_details),
            "versionNumber": self.version_number,
        }

    def summary(self) -> dict[str, Any]:
        """JobExecutionSummary."""
        doc: dict[str, Any] = {"jobId": self.job_id, "queuedAt": int(self.queued_at)}
        if self.started_at is not None:
            doc["startedAt"] = int(self.started_at)
        doc["lastUpdatedAt"] = int(self.last_updated_at)
        doc["versionNumber"] = self.version_number
        doc["executionNumber"] = self.execution_number
        return doc

    def execution(self, now: float, *, include_document: bool = True) -> dict[str, Any]:
        """JobExecution, with the job document as a parsed JSON object."""
        doc: dict[str, Any] = {"jobId": self.job_id, "thingName": self.thing_name}
        if include_document:
            doc["jobDocument"] = self.job_document()
        doc["status"] = self.status
        doc["statusDetails"] = dict(self.status_details)
        doc["queuedAt"] = int(self.queued_at)
        if self.started_at is not None:
            doc["startedAt"] = int(self.started_at)
        doc["lastUpdatedAt"] = int(self.last_updated_at)
        doc["versionNumber"] = self.version_number
        doc["executionNumber"] = self.execution_number
        if self.deadline is not None and self.status == IN_PROGRESS:
            doc["approximateSecondsBeforeTimedOut"] = max(0, int(self.deadline - now))
        return doc


def advance(
    e: Execution,
    status: str,
    details: Mapping[str, str] | None,
    step_timeout: int | None,
    now: float,
) -> Execution:
    """``e`` after an allowed device transition to ``status``.

    Step timer: a terminal status or ``-1`` stops it; a new ``stepTimeoutInMinutes``
    (re)starts it; leaving QUEUED without one starts the job's default; otherwise it runs on.
    Omitted ``details`` keep the stored ones; given ones replace them.
    """
    minutes, deadline = e.step_timeout_minutes, e.deadline
    if status != IN_PROGRESS or step_timeout == CANCEL_STEP_TIMER:
        minutes, deadline = None, None
    elif step_timeout is not None:
        minutes, deadline = step_timeout, now + 60.0 * step_timeout
    elif e.status == QUEUED and e.job_step_timeout_minutes is not None:
        minutes = e.job_step_timeout_minutes
        deadline = now + 60.0 * minutes
    started = e.started_at
    if started is None and status == IN_PROGRESS:
        started = now
    return dataclasses.replace(
        e,
        status=status,
        status_details=dict(details) if details is not None else e.status_details,
        version_number=e.version_number + 1,
        started_at=started,
        last_updated_at=now,
        step_timeout_minutes=minutes,
        deadline=deadline,
    )


def ended(e: Execution, status: str, now: float) -> Execution:
    """``e`` ended by the service: TIMED_OUT, CANCELED or REMOVED."""
    return dataclasses.replace(
        e, status=status, version_number=e.version_number + 1, last_updated_at=now, deadline=None
    )


@dataclass(frozen=True)
class Job:
    """A job as the operator sees it, with its executions."""

    job_id: str
    status: str
    document: str
    created_at: float
    last_updated_at: float
    completed_at: float | None
    step_timeout_minutes: int | None
    executions: tuple[Execution, ...]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for e in self.executions:
            out[e.status] += 1
        return {s: n for s, n in out.items() if n}

    def as_dict(self, now: float, *, executions: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "jobId": self.job_id,
            "status": self.status,
            "createdAt": int(self.created_at),
            "lastUpdatedAt": int(self.last_updated_at),
            "completedAt": None if self.completed_at is None else int(self.completed_at),
            "stepTimeoutInMinutes": self.step_timeout_minutes,
            "targets": [e.thing_name for e in self.executions],
            "counts": self.counts(),
            "document": json.loads(self.document),
        }
        if executions:
            doc["executions"] = [e.execution(now, include_document=False) for e in self.executions]
        return doc


def pending_lists(pending: list[Execution]) -> tuple[list[Execution], list[Execution]]:
    """(IN_PROGRESS, QUEUED) of a thing's pending executions in delivery order, together at
    most MAX_PENDING_LISTED."""
    shown = pending[:MAX_PENDING_LISTED]
    return (
        [e for e in shown if e.status == IN_PROGRESS],
        [e for e in shown if e.status == QUEUED],
    )


def notify_payload(pending: list[Execution], now: float) -> dict[str, Any]:
    """JobExecutionsChanged: lists with no executions are left out, as AWS does."""
    in_progress, queued = pending_lists(pending)
    jobs: dict[str, Any] = {}
    if in_progress:
        jobs[IN_PROGRESS] = [e.summary() for e in in_progress]
    if queued:
        jobs[QUEUED] = [e.summary() for e in queued]
    return {"timestamp": int(now), "jobs": jobs}


def notify_next_payload(nxt: Execution | None, now: float) -> dict[str, Any]:
    """NextJobExecutionChanged: just the timestamp once nothing is pending."""
    doc: dict[str, Any] = {"timestamp": int(now)}
    if nxt is not None:
        doc["execution"] = nxt.execution(now)
    return doc


def resolve_presigned(value: Any, presign: Callable[[str], str] | None) -> Any:
    """``value`` with every ``${aws:iot:s3-presigned-url:URL}`` replaced by ``presign(URL)``
    (by URL itself without a signer), in every string of a parsed job document."""
    if isinstance(value, str):
        return PRESIGNED_RE.sub(lambda m: presign(m[1]) if presign else m[1], value)
    if isinstance(value, list):
        return [resolve_presigned(v, presign) for v in value]
    if isinstance(value, dict):
        return {k: resolve_presigned(v, presign) for k, v in value.items()}
    return value
