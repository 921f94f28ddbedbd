"""The local jobs service on an MQTT broker: AWS IoT Jobs' device API, topic for topic.

It subscribes to ``$aws/things/+/jobs/#``, answers each request on ``<topic>/accepted`` or
``<topic>/rejected`` (see ``api.py``), and publishes the notifications as AWS does:

* ``notify`` ``{timestamp, jobs: {IN_PROGRESS: [summary], QUEUED: [summary]}}`` whenever a
  thing's pending list changes (an execution queued, started, or ended); empty lists are
  left out;
* ``notify-next`` ``{timestamp, execution}`` whenever the thing's next execution (the one
  ``$next/get`` would return) becomes another one, and ``{timestamp}`` once none is pending.
  A statusDetails update of the same execution sends neither.

Every change reaches the notifications through the store's change log: device requests,
step timeouts (a sweep every ``poll_interval_s``), and the operator's ``jobs create`` /
``jobs cancel`` run in another process (the same poll reads the log), so the command line
needs no broker access.  On start the service announces each thing's pending jobs once, for
devices that asked while it was down.

Replies reach whoever subscribes to the thing's topics.  To keep a device from reading
another's, give each client only its own tree with a mosquitto ACL, e.g.
``pattern readwrite $aws/things/%c/jobs/#``.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from fota_common.errors import ConfigError
from localjobs import LocalJobsError
from localjobs import model as m
from localjobs.api import SUBSCRIPTION, JobsApi, Throttle, jobs_topic
from localjobs.store import JobStore

log = logging.getLogger(__name__)

QOS = 1
STOP_TIMEOUT_S = 5.0

_Fingerprint = tuple[tuple[tuple[str, str], ...], tuple[str, int] | None]
_NOTHING: _Fingerprint = ((), None)


@dataclass(frozen=True)
class ServiceTls:
    """The jobs service's own broker TLS: the CA that signed the broker, and the service's
    client certificate for mutual TLS (the gateway's is host_bridge.jobs.broker.TlsConfig)."""

    ca: str
    cert: str | None = None
    key: str | None = None


class JobsService:
    """Serves the Jobs device API for every thing in ``store`` on the broker."""

    def __init__(
        self,
        store: JobStore,
        broker_host: str,
        broker_port: int,
        tls: ServiceTls | None = None,
        clock: Callable[[], float] = time.time,
        *,
        presign: Callable[[str], str] | None = None,
        throttle: Throttle | None = None,
        client_id: str | None = None,
        poll_interval_s: float = 1.0,
        keepalive_s: int = 30,
    ) -> None:
        self.store = store
        self.broker = (broker_host, broker_port)
        self.clock = clock
        self.api = JobsApi(store, clock, presign, throttle)
        self.poll_interval_s = poll_interval_s
        self.keepalive_s = keepalive_s
        self._seen: dict[str, _Fingerprint] = {}
        self._last_change = 0
        self._notify_lock = threading.Lock()
        self._ready = threading.Event()  # connected and subscribed
        self._settled = threading.Event()  # the first connection attempt ended, either way
        self._stop = threading.Event()
        self._error: str | None = None
        self._poller: threading.Thread | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"fota-local-jobs-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        if tls is not None:
            try:
                client.tls_set(ca_certs=tls.ca, certfile=tls.cert, keyfile=tls.key)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConfigError(f"broker TLS files: {exc}") from exc
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        self._client = client

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        """Connect, subscribe, announce pending jobs and start the sweep; raises
        LocalJobsError when the broker cannot be reached within ``timeout_s``."""
        host, port = self.broker
        self._last_change = self.store.last_change()
        try:
            self._client.connect(host, port, self.keepalive_s)
        except (OSError, ssl.SSLError) as exc:
            raise LocalJobsError(f"cannot connect to the broker at {host}:{port}: {exc}") from exc
        self._client.loop_start()
        if not self._settled.wait(timeout_s) or self._error:
            self._client.loop_stop()
            self._client.disconnect()
            why = self._error or f"no reply within {timeout_s:g} s"
            raise LocalJobsError(f"broker {host}:{port}: {why}")
        with self._notify_lock:
            for thing in self.store.things_with_pending():
                self._notify(thing)
        self._poller = threading.Thread(target=self._poll, name="localjobs-sweep", daemon=True)
        self._poller.start()
        log.info("jobs service on %s:%d", host, port)

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(STOP_TIMEOUT_S)
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> JobsService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Whether the service is (again) connected and subscribed within ``timeout_s``."""
        return self._ready.wait(timeout_s)

    # -- notifications -----------------------------------------------------------------------
    def sweep(self) -> None:
        """Time out executions past their step deadline, then publish every pending change."""
        self.store.expire_due()
        self.publish_changes()

    def publish_changes(self) -> None:
        """Publish notify / notify-next for each thing changed since the last call."""
        with self._notify_lock:
            self._last_change, things = self.store.changes_since(self._last_change)
            for thing in things:
                self._notify(thing)

    def _notify(self, thing: str) -> None:
        pending = self.store.pending(thing)
        listed = tuple((e.job_id, e.status) for e in pending)
        nxt = pending[0] if pending else None
        next_id = (nxt.job_id, nxt.execution_number) if nxt else None
        old_listed, old_next = self._seen.get(thing, _NOTHING)
        now = self.clock()
        if listed != old_listed:
            self._publish(jobs_topic(thing, "notify"), m.notify_payload(pending, now))
        if next_id != old_next:
            doc = self.api.with_urls(m.notify_next_payload(nxt, now))
            self._publish(jobs_topic(thing, "notify-next"), doc)
        if pending:
            self._seen[thing] = (listed, next_id)
        else:
            self._seen.pop(thing, None)

    def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, separators=(",", ":"))
        info = self._client.publish(topic, data, qos=QOS)
        log.debug("published %s (%d bytes)", topic, len(data))
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("publish to %s queued while disconnected (%s)", topic, info.rc)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.sweep()
            except LocalJobsError as exc:
                log.error("sweep failed: %s", exc)

    # -- paho callbacks (the network thread) -----------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            self._error = f"connection refused: {rc}"
            self._settled.set()
            return
        client.subscribe(SUBSCRIPTION, qos=QOS)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        if any(rc.is_failure for rc in rcs):
            self._error = f"subscription to {SUBSCRIPTION} refused"
        else:
            self._ready.set()
        self._settled.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        self._ready.clear()
        if not self._settled.is_set():
            self._error = f"the broker closed the connection ({rc})"
            self._settled.set()
        if not self._stop.is_set():
            log.warning("broker connection lost (%s); reconnecting", rc)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            reply = self.api.handle(msg.topic, bytes(msg.payload))
            if reply is None:
                return
            self._publish(reply.topic, reply.payload)
            self.publish_changes()
        except Exception:  # never let a callback kill paho's network thread
            log.exception("handling %s failed", msg.topic)
