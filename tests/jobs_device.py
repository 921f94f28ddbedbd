"""A paho client playing one device (thing) of the AWS IoT Jobs device API, for tests.

    dev = JobsDevice("127.0.0.1", broker.port, "thing-1").connect()
    topic, reply = dev.request("start-next", {"clientToken": "t1"})   # .../accepted or /rejected
    note = dev.expect("notify-next")                                  # the next one on that topic
    dev.close()

It subscribes to its own ``$aws/things/<thing>/jobs/#`` only and keeps every message it
receives, in order, per topic.  Every wait is bounded (a queue get with a deadline).
"""

from __future__ import annotations

import json
import queue
import ssl
import threading
import uuid
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

WAIT_S: Final = 5.0


class JobsDevice:
    def __init__(
        self,
        host: str,
        port: int,
        thing: str,
        *,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        subscribe: str | None = None,
    ) -> None:
        self.thing = thing
        self.prefix = f"$aws/things/{thing}/jobs/"
        self.subscription = subscribe or f"{self.prefix}#"
        self.address = (host, port)
        self.received: list[tuple[str, Any]] = []
        self._queues: dict[str, queue.Queue[Any]] = {}
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.disconnected = threading.Event()
        self.refused: str | None = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"dev-{thing}-{uuid.uuid4().hex[:6]}"
        )
        if ca is not None:
            self.client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.disconnected.set()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if rc.is_failure:
            self.refused = str(rc)
            return
        client.subscribe(self.subscription, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload: Any = json.loads(msg.payload) if msg.payload else None
        except ValueError:
            payload = bytes(msg.payload)
        base, _, kind = msg.topic.rpartition("/")
        with self._lock:
            self.received.append((msg.topic, payload))
            self._queue(msg.topic).put(payload)
            if kind in ("accepted", "rejected"):
                self._queue(base + "/reply").put((kind, payload))

    def _queue(self, topic: str) -> queue.Queue[Any]:
        return self._queues.setdefault(topic, queue.Queue())

    def connect(self, timeout_s: float = WAIT_S) -> JobsDevice:
        self.client.connect(*self.address, keepalive=30)
        self.client.loop_start()
        if not self.subscribed.wait(timeout_s):
            self.close()
            raise AssertionError(
                f"{self.thing}: not subscribed within {timeout_s} s (refused: {self.refused})"
            )
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> JobsDevice:
        return self if self.subscribed.is_set() else self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- traffic ---------------------------------------------------------------------------
    def publish(self, suffix: str, body: dict[str, Any] | bytes | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        self.client.publish(self.prefix + suffix, data, qos=1).wait_for_publish(WAIT_S)

    def expect(self, suffix: str, timeout_s: float = WAIT_S) -> Any:
        """The next message on ``<prefix><suffix>`` (or on a full topic given with ``$``)."""
        topic = suffix if suffix.startswith("$") else self.prefix + suffix
        with self._lock:
            q = self._queue(topic)
        try:
            return q.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(
                f"{self.thing}: nothing on {topic} within {timeout_s} s; got "
                f"{[t for t, _ in self.received]}"
            ) from None

    def pending(self, suffix: str) -> int:
        """How many messages on that topic are waiting to be expected."""
        topic = suffix if suffix.startswith("$") else self.prefix + suffix
        with self._lock:
            return self._queue(topic).qsize()

    def request(
        self,
        suffix: str,
        body: dict[str, Any] | bytes | None = None,
        timeout_s: float = WAIT_S,
    ) -> tuple[str, Any]:
        """Publish a request; ("accepted" | "rejected", reply) for it."""
        with self._lock:
            replies = self._queue(self.prefix + suffix + "/reply")
        self.publish(suffix, body)
        try:
            kind, reply = replies.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(
                f"{self.thing}: no reply to {suffix} within {timeout_s} s; "
                f"got {[t for t, _ in self.received]}"
            ) from None
        with self._lock:  # the same reply also waits on its own topic's queue: take it off
            self._queue(f"{self.prefix}{suffix}/{kind}").get_nowait()
        return kind, reply


def tls_refused(host: str, port: int, ca: str, timeout_s: float = WAIT_S) -> bool:
    """True when the broker refuses a TLS client without a certificate (the handshake or
    the first read fails, or the connection closes before CONNACK)."""
    dev = JobsDevice(host, port, "no-cert", ca=ca)
    try:
        dev.client.connect(host, port, keepalive=30)
    except (ssl.SSLError, OSError):
        return True
    dev.client.loop_start()
    try:
        done = dev.disconnected.wait(timeout_s)
        return done and not dev.subscribed.is_set()
    finally:
        dev.close()
