"""AWS IoT Jobs device API over MQTT (paho-mqtt), for many things on one connection.

Every request carries a ``clientToken``; its reply (``/accepted`` or ``/rejected``) is
matched by token, and the thing name in the reply's topic must be ours.  Only
RequestThrottled, ResourceNotFound and InternalError are retried.  On every (re)connect
the subscriptions are renewed and a ``$next/get`` is sent for each thing, so nothing
published while the link was down is missed.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fota_common.errors import BridgeError, ConfigError
from fota_common.errors import JobsError as JobsError  # re-exported
from host_bridge.jobs.broker import BrokerConfig as BrokerConfig  # re-exported
from host_bridge.jobs.received import annotate_execution

log = logging.getLogger("fota.jobs")

CATCH_UP_TIMEOUT_S = 3.0
RETRYABLE = ("RequestThrottled", "ResourceNotFound", "InternalError")
PREFIX = "$aws/things/"


NextJobCallback = Callable[[str, dict[str, Any] | None], None]


def _flat(value: object) -> str:
    """One line, without the ``(_ssl.c:1234)`` tails of OpenSSL errors."""
    text = " ".join(str(value).split())
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)


def topic_thing(topic: str) -> tuple[str, str] | None:
    """(thing, rest) of a ``$aws/things/{thing}/jobs/{rest}`` topic."""
    if not topic.startswith(PREFIX):
        return None
    thing, sep, rest = topic[len(PREFIX) :].partition("/jobs/")
    return (thing, rest) if sep and thing else None


class JobsClient:
    """The device side of AWS IoT Jobs for a set of things."""

    def __init__(
        self,
        broker: BrokerConfig,
        things: list[str],
        on_next_job: NextJobCallback,
        mqtt_factory: Callable[[str], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.broker = broker
        self.things = list(things)
        self.on_next_job = on_next_job
        self.sleep = sleep
        self._pending: dict[str, tuple[threading.Event, list[tuple[str, dict[str, Any]]]]] = {}
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.ever_connected = False
        self._closing = False
        self._refused = threading.Event()  # the first connection attempt failed
        self._refusal = ""  # why: the broker's reason, or the socket/TLS error paho logged
        self._last_error = ""
        self._client = (mqtt_factory or self._make_client)(broker.client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_log = self._on_log

    # -- connection ------------------------------------------------------------------
    def _make_client(self, client_id: str) -> Any:

        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        tls = self.broker.tls
        if tls is not None:
            try:
                c.tls_set(
                    ca_certs=tls.ca,
                    certfile=tls.cert,
                    keyfile=tls.key,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConfigError(f"TLS setup failed: {exc}") from exc
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        return c

    def connect(self, timeout_s: float = 15.0) -> None:
        """Connect and subscribe; raise JobsError at once when the broker refuses the first
        attempt (e.g. a TLS broker that wants a client certificate), or after ``timeout_s``.
        Later disconnections are repaired by paho's reconnect loop."""
        where = f"{self.broker.host}:{self.broker.port}"
        try:
            self._client.connect(self.broker.host, self.broker.port, self.broker.keepalive_s)
        except (OSError, ssl.SSLError) as exc:
            raise JobsError(f"cannot connect to MQTT broker {where}: {_flat(exc)}") from exc
        self._client.loop_start()
        deadline = time.monotonic() + timeout_s
        while not self.connected.is_set() and not self._refused.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.connected.wait(min(left, 0.05))
        if self.connected.is_set():
            return
        self._client.loop_stop()
        if self._refused.is_set():
            raise JobsError(f"MQTT broker {where} refused the connection: {self._why()}")
        raise JobsError(
            f"MQTT broker {where} did not accept the connection within {timeout_s:g} s "
            "(check the host, port, TLS certificates and client id)"
        )

    def _why(self) -> str:
        why = self._refusal or "the connection was closed"
        tls = self.broker.tls
        if (
            tls is not None
            and tls.cert is None
            and (
                "CERTIFICATE_REQUIRED" in why.upper().replace(" ", "_")
                or "EOF" in why
                or "closed" in why
            )
        ):
            why += " (the broker may require a client certificate: set cert and key in [broker])"
        elif tls is not None and "CERTIFICATE_VERIFY_FAILED" in why:
            why += " (check [broker] ca: the CA that signed the broker's certificate)"
        return why

    def close(self) -> None:
        self._closing = True
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    def _on_log(self, client: Any, userdata: Any, level: int, buf: str) -> None:
        # paho reports socket and TLS failures only through its log: keep the last one,
        # for the error when the very first connection attempt fails.
        if level == 8:  # MQTT_LOG_ERR
            self._last_error = buf

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the connection: %s", reason)
            if not self.ever_connected:
                self._refusal = f"{reason} (check the client id and the broker's ACL)"
                self._refused.set()
            return
        self.ever_connected = True
        subs = []
        for t in self.things:
            base = f"{PREFIX}{t}/jobs/"
            subs += [
                base + "notify-next",
                base + "get/+",
                base + "start-next/+",
                base + "+/get/+",
                base + "+/update/+",
            ]
        client.subscribe([(s, 1) for s in subs])
        self.connected.set()
        log.info(
            "connected to %s:%s; %d things", self.broker.host, self.broker.port, len(self.things)
        )
        # Ask for the next job of every thing: catches what was published while offline.
        # Not from paho's network thread (a request waits for its reply), and retried: after a
        # broker restart the jobs service may not be subscribed again yet.
        threading.Thread(target=self._catch_up, name="jobs-catch-up", daemon=True).start()

    def _catch_up(self) -> None:
        for t in self.things:
            try:
                body = self.request(t, "$next/get", {}, timeout_s=CATCH_UP_TIMEOUT_S, retries=5)
            except BridgeError as exc:
                log.warning("could not ask for the next job of %s: %s", t, exc)
                continue
            execution = body.get("execution")
            self._dispatch(t, execution if isinstance(execution, dict) else None)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        if not self.ever_connected:
            if not self._refusal:
                self._refusal = _flat(
                    self._last_error.removeprefix("failed to receive on socket: ")
                ) or str(reason)
            self._refused.set()
            return
        if not self._closing:
            log.warning("disconnected from the broker (%s); paho reconnects", reason)

    # -- messages --------------------------------------------------------------------
    def _publish(self, thing: str, suffix: str, payload: dict[str, Any]) -> None:
        self._client.publish(f"{PREFIX}{thing}/jobs/{suffix}", json.dumps(payload), qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        parsed = topic_thing(msg.topic)
        if parsed is None or parsed[0] not in self.things:
            return  # not ours: the thing name is checked on every reply
        thing, rest = parsed
        try:
            body = json.loads(msg.payload)
        except ValueError:
            log.warning("ignoring a non-JSON message on %s", msg.topic)
            return
        if not isinstance(body, dict):
            return
        annotate_execution(msg.payload, body)  # the document's length as AWS counts it
        kind = rest.rsplit("/", 1)[-1]
        token = body.get("clientToken")
        if isinstance(token, str) and kind in ("accepted", "rejected"):
            with self._lock:
                waiter = self._pending.get(token)
            if waiter is not None:
                waiter[1].append((kind, body))
                waiter[0].set()
                return
        if rest == "notify-next" or (rest == "$next/get/accepted"):
            execution = body.get("execution")
            self._dispatch(thing, execution if isinstance(execution, dict) else None)

    def _dispatch(self, thing: str, execution: dict[str, Any] | None) -> None:
        try:
            self.on_next_job(thing, execution)
        except Exception:  # a handler bug must not kill paho's network thread
            log.exception("next-job handler failed for %s", thing)

    # -- requests --------------------------------------------------------------------
    def request(
        self,
        thing: str,
        suffix: str,
        payload: dict[str, Any],
        timeout_s: float = 10.0,
        retries: int = 3,
    ) -> dict[str, Any]:
        """Publish a request and return the accepted reply; raise JobsError if rejected.

        While the broker connection is down the request waits for it (up to ``timeout_s``
        per attempt) instead of being queued behind a dead socket.
        """
        for attempt in range(retries + 1):
            if not self.connected.wait(timeout_s):
                if attempt < retries:
                    continue
                raise JobsError(
                    f"{suffix} for {thing}: not connected to the MQTT broker "
                    f"{self.broker.host}:{self.broker.port}"
                )
            token = uuid.uuid4().hex[:32]
            event = threading.Event()
            box: list[tuple[str, dict[str, Any]]] = []
            with self._lock:
                self._pending[token] = (event, box)
            try:
                self._publish(thing, suffix, {**payload, "clientToken": token})
                got = event.wait(timeout_s)
            finally:
                with self._lock:
                    self._pending.pop(token, None)
            if not got:
                if attempt < retries:
                    continue
                raise JobsError(f"no reply to {suffix} for {thing} within {timeout_s:g} s")
            kind, body = box[0]
            if kind == "accepted":
                return body
            code = str(body.get("code", ""))
            if code in RETRYABLE and attempt < retries:
                self.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            raise JobsError(
                f"{suffix} for {thing} rejected: {code}: {body.get('message', '')}".strip(),
                code,
                body.get("executionState"),
            )
        raise JobsError(f"{suffix} for {thing}: retries exhausted")

    def start_next(
        self, thing: str, details: dict[str, str], step_timeout_min: int | None = None
    ) -> dict[str, Any] | None:
        payload: dict[str, Any] = {"statusDetails": details}
        if step_timeout_min:
            payload["stepTimeoutInMinutes"] = step_timeout_min
        body = self.request(thing, "start-next", payload)
        execution = body.get("execution")
        return execution if isinstance(execution, dict) else None

    def describe(self, thing: str, job_id: str) -> dict[str, Any] | None:
        body = self.request(thing, f"{job_id}/get", {"includeJobDocument": True})
        execution = body.get("execution")
        return execution if isinstance(execution, dict) else None

    def update(
        self,
        thing: str,
        job_id: str,
        status: str,
        details: dict[str, str] | None = None,
        expected_version: int | None = None,
        step_timeout_min: int | None = None,
        *,
        timeout_s: float = 10.0,
        retries: int = 3,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"status": status, "includeJobExecutionState": True}
        if details is not None:
            payload["statusDetails"] = details
        if expected_version is not None:
            payload["expectedVersion"] = expected_version
        if step_timeout_min:
            payload["stepTimeoutInMinutes"] = step_timeout_min
        return self.request(thing, f"{job_id}/update", payload, timeout_s, retries)
