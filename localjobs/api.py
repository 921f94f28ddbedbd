"""One device request in, one reply out: the Jobs MQTT API's topics and request bodies.

:meth:`JobsApi.handle` maps ``$aws/things/{thing}/jobs/...`` requests to the store and
returns the reply to publish (``<request topic>/accepted`` or ``/rejected``).  It does no
MQTT I/O, so it is tested without a broker.  The service's own publications (``.../accepted``,
``.../rejected``, ``notify``, ``notify-next``) come back through its subscription; they are
ignored here.

Choices where AWS's documentation is silent:
  * an empty payload is the empty request ``{}``; JSON that is not an object is InvalidRequest;
  * ``expectedVersion``, ``executionNumber`` and ``stepTimeoutInMinutes`` may be integers or
    decimal strings (AWS's own embedded SDK sends ``"expectedVersion":"3"``);
  * a thing name or job id of the wrong syntax in a known topic shape is InvalidRequest;
    a topic shape that names no API is InvalidTopic;
  * the clientToken (1-64 printable ASCII characters) is echoed whenever it is a string.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from localjobs import LocalJobsError
from localjobs import model as m
from localjobs.model import Rejection
from localjobs.store import JobStore, Result

log = logging.getLogger(__name__)

SUBSCRIPTION: Final = "$aws/things/+/jobs/#"
IGNORED_SUFFIXES: Final = ("/accepted", "/rejected", "/notify", "/notify-next")

GET: Final = "get"
START_NEXT: Final = "start-next"
DESCRIBE: Final = "describe"
UPDATE: Final = "update"
UNKNOWN: Final = "unknown"

_INT_RE: Final = re.compile(r"-?[0-9]{1,12}")


def jobs_topic(thing: str, suffix: str) -> str:
    return f"$aws/things/{thing}/jobs/{suffix}"


@dataclass(frozen=True)
class Route:
    """Which API a request topic names."""

    thing: str
    api: str
    job_id: str | None = None


def parse_topic(topic: str) -> Route | None:
    """The API of a request topic; None for topics the service must not answer."""
    if topic.endswith(IGNORED_SUFFIXES):
        return None
    parts = topic.split("/")
    if len(parts) < 4 or parts[:2] != ["$aws", "things"] or parts[3] != "jobs":
        return None
    thing, rest = parts[2], parts[4:]
    if rest == [GET]:
        return Route(thing, GET)
    if rest == [START_NEXT]:
        return Route(thing, START_NEXT)
    if len(rest) == 2 and rest[1] == "get":
        return Route(thing, DESCRIBE, rest[0])
    if len(rest) == 2 and rest[1] == "update":
        return Route(thing, UPDATE, rest[0])
    return Route(thing, UNKNOWN)


@dataclass(frozen=True)
class Reply:
    topic: str
    payload: dict[str, Any]


class _Invalid(Exception):
    """A request field of the wrong type (becomes an InvalidRequest reply)."""


def _int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT_RE.fullmatch(value):
        return int(value)
    raise _Invalid(f"{key} must be an integer")


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise _Invalid(f"{key} must be true or false")
    return value


def _details(body: dict[str, Any]) -> dict[str, str] | None:
    value = body.get("statusDetails")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Invalid("statusDetails must be an object of string values")
    return value


class Throttle:
    """A token bucket per thing: ``rate_per_s`` requests a second in bursts of ``burst``."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # thing -> (tokens, at)
        self._lock = threading.Lock()

    def allow(self, thing: str) -> bool:
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(thing, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
            allowed = tokens >= 1.0
            self._buckets[thing] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > 4096:  # forget full buckets: they hold no history
                full = [k for k, (t, _) in self._buckets.items() if t >= self.burst - 1]
                for k in full:
                    del self._buckets[k]
            return allowed


class JobsApi:
    """The device side of AWS IoT Jobs over a :class:`JobStore`.

    ``presign(url)`` replaces each ``${aws:iot:s3-presigned-url:URL}`` in a job document
    every time the document is delivered; without it the placeholder becomes the bare URL.
    """

    def __init__(
        self,
        store: JobStore,
        clock: Callable[[], float] | None = None,
        presign: Callable[[str], str] | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.store = store
        self.clock = clock or store.clock
        self.presign = presign
        self.throttle = throttle

    def handle(self, topic: str, payload: bytes) -> Reply | None:
        route = parse_topic(topic)
        if route is None:
            return None
        token: str | None = None
        result: Result
        try:
            body = json.loads(payload.decode("utf-8")) if payload.strip() else {}
        except (UnicodeDecodeError, ValueError, RecursionError):
            body = None  # RecursionError: nested deeper than the decoder can follow
        if isinstance(body, dict) and isinstance(body.get("clientToken"), str):
            token = body["clientToken"]
        if route.api == UNKNOWN:
            result = Rejection(m.INVALID_TOPIC, f"{topic} names no Jobs API")
        elif self.throttle is not None and not self.throttle.allow(route.thing):
            result = Rejection(m.REQUEST_THROTTLED, f"too many requests from {route.thing}")
        elif body is None:
            result = Rejection(m.INVALID_JSON, "the payload is not UTF-8 JSON")
        elif not isinstance(body, dict):
            result = Rejection(m.INVALID_REQUEST, "the payload must be a JSON object")
        else:
            result = self._call(route, body)
        return self._reply(topic, result, token)

    def _call(self, route: Route, body: dict[str, Any]) -> Result:
        try:
            token = body.get("clientToken")
            if token is not None and not (
                isinstance(token, str) and m.CLIENT_TOKEN_RE.fullmatch(token)
            ):
                raise _Invalid("clientToken must be 1-64 printable ASCII characters")
            if route.api == GET:
                return self.store.get_pending(route.thing)
            if route.api == START_NEXT:
                return self.store.start_next(
                    route.thing, _details(body), _int(body, "stepTimeoutInMinutes")
                )
            assert route.job_id is not None
            if route.api == DESCRIBE:
                return self.store.describe_execution(
                    route.thing,
                    route.job_id,
                    _int(body, "executionNumber"),
                    _bool(body, "includeJobDocument", True),
                )
            status = body.get("status")
            if not isinstance(status, str):
                raise _Invalid("status is required: IN_PROGRESS, SUCCEEDED, FAILED or REJECTED")
            return self.store.update_execution(
                route.thing,
                route.job_id,
                status,
                _details(body),
                expected_version=_int(body, "expectedVersion"),
                execution_number=_int(body, "executionNumber"),
                step_timeout=_int(body, "stepTimeoutInMinutes"),
                include_state=_bool(body, "includeJobExecutionState", False),
                include_document=_bool(body, "includeJobDocument", False),
            )
        except _Invalid as exc:
            return Rejection(m.INVALID_REQUEST, str(exc))
        except LocalJobsError as exc:
            log.error("jobs request for %s failed: %s", route.thing, exc)
            return Rejection(m.INTERNAL_ERROR, "the job store failed; try again")
        except Exception:  # the boundary: a bug must not take the service down
            log.exception("jobs request for %s failed", route.thing)
            return Rejection(m.INTERNAL_ERROR, "internal error; try again")

    def _reply(self, topic: str, result: Result, token: str | None) -> Reply:
        if isinstance(result, Rejection):
            doc = result.payload()
            suffix = "rejected"
        else:
            doc = self.with_urls(result)
            suffix = "accepted"
        if token is not None:
            doc["clientToken"] = token
        doc["timestamp"] = int(self.clock())
        return Reply(f"{topic}/{suffix}", doc)

    def with_urls(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with fresh presigned URLs in its job document, wherever it holds one."""
        out = dict(doc)
        if "jobDocument" in out:
            out["jobDocument"] = m.resolve_presigned(out["jobDocument"], self.presign)
        execution = out.get("execution")
        if isinstance(execution, dict) and "jobDocument" in execution:
            execution = dict(execution)
            execution["jobDocument"] = m.resolve_presigned(execution["jobDocument"], self.presign)
            out["execution"] = execution
        return out
