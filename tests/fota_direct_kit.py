"""What the direct-mode tests share: images, a device's flash, an HTTP session and an
MQTT client for the fake-peer tier.

The fake tier runs ``mcu.fota`` / ``mcu.jobs`` against:

- :class:`FakeMqtt`: the slice of adafruit_minimqtt's ``MQTT`` those modules use, wired to a
  :class:`FakeJobsBroker` that answers the Jobs topics from the real local job store
  (``localjobs.store.JobStore``), so the Jobs semantics are the service's own;
- :class:`FakeSession`: the slice of ``adafruit_requests.Session`` the download uses.

Nothing here sleeps: ``loop()`` delivers what is queued and returns.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from adafruit_minimqtt.matcher import MQTTMatcher

from bootloader.formats.layout import Layout, load_board
from bootloader.sim.flash import Flash, FlashArea
from bootloader.sim.testimages import payload, sign
from localjobs.api import JobsApi
from localjobs.store import JobStore
from mcu import mcuboot as mb
from mcu.flash_area import RamArea

BOARD: Final = "tiny"
THING: Final = "direct-thing-1"


def layout() -> Layout:
    return load_board(BOARD)


def firmware(version: str, size: int = 1500) -> bytes:
    """A hash-only MCUboot image for the tiny board, signed by imgtool."""
    return sign(payload(size, f"direct:{version}"), version, layout())


def image_hash(image: bytes) -> str:
    """The image's hash TLV (what MCUboot, SMP and our statusDetails call its hash), hex."""
    area = RamArea(len(image) + 64, 8, 8)
    area.mem[: len(image)] = image
    info = mb.image_info(area)
    assert info is not None
    return bytes(info["hash"]).hex()


def program(area: FlashArea | RamArea, image: bytes) -> None:
    """Write an image at the start of an erased slot (as a factory programmer would)."""
    ws = area.write_size
    padded = image + b"\xff" * (-len(image) % ws)
    area.write(0, padded)


def new_flash(lay: Layout, path: Path | None, running: bytes) -> Flash:
    flash = Flash.for_layout(lay, path)
    program(flash.area(lay.slot0), running)
    return flash


def native_doc(url: str, image: bytes, version: str | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operation": "fota",
        "url": url,
        "size": len(image),
        "sha256": hashlib.sha256(image).hexdigest(),
    }
    if version is not None:
        doc["version"] = version
    doc.update(extra)
    return doc


def seed_doc(url: str, image: bytes, md5: str | None = None) -> dict[str, Any]:
    return {
        "bc_idx": 1,
        "bc_crc": md5 or hashlib.md5(image).hexdigest(),
        "bc_size": len(image),
        "bc_url": url,
    }


# -- HTTP --------------------------------------------------------------------------------------


class FakeSocket:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeResponse:
    def __init__(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str],
        piece: int,
        fail_after: int | None = None,
    ) -> None:
        self.fail_after = fail_after
        self.status_code = status
        self.headers = headers
        self.socket: FakeSocket | None = FakeSocket()
        self.raw_socket = self.socket
        self._body = body
        self._piece = piece
        self.closed = False

    def iter_content(self, chunk_size: int = 1) -> Iterator[bytes]:
        # Short reads, as a socket gives them: never more than chunk_size, often less.
        n = min(chunk_size, self._piece)
        for off in range(0, len(self._body), n):
            if self.fail_after is not None and off >= self.fail_after:
                raise OSError(104, "ECONNRESET")
            yield self._body[off : off + n]
        self.close()

    def close(self) -> None:
        self.closed = True
        self.socket = None


class FakeSession:
    """``adafruit_requests.Session`` as far as a streamed GET goes."""

    def __init__(self, piece: int = 700) -> None:
        self.routes: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.fail_after: int | None = None  # the connection breaks after this many bytes
        self.piece = piece
        self.responses: list[FakeResponse] = []
        self.on_get: list[Any] = []  # callables run at each get() (to observe the device)

    def serve(self, url: str, body: bytes, status: int = 200, length: int | None = None) -> str:
        headers = {"content-length": str(len(body) if length is None else length)}
        self.routes[url] = (status, body, headers)
        return url

    def get(self, url: str, stream: bool = False, timeout: float = 60) -> FakeResponse:
        for hook in self.on_get:
            hook(url)
        if url not in self.routes:
            raise OSError(113, "No route to host")
        status, body, headers = self.routes[url]
        resp = FakeResponse(status, body, headers, self.piece, self.fail_after)
        self.responses.append(resp)
        return resp


# -- MQTT --------------------------------------------------------------------------------------


class FakeJobsBroker:
    """The Jobs topics answered by the local jobs service's request handler (JobsApi over a
    JobStore), without a broker; replies go to the asking client only."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.api = JobsApi(store) if store is not None else None
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def handle(self, client: FakeMqtt, topic: str, text: str) -> None:
        self.requests.append((topic, json.loads(text)))
        assert self.api is not None
        reply = self.api.handle(topic, text.encode())
        if reply is not None:
            client.deliver(reply.topic, json.dumps(reply.payload))

    def notify_next(self, client: FakeMqtt, thing: str) -> None:
        pending = self.store.pending(thing)
        body: dict[str, Any] = {"timestamp": 1700000000}
        if pending:
            body["execution"] = pending[0].execution(1700000000)
        assert self.api is not None
        body = self.api.with_urls(body)
        client.deliver(f"$aws/things/{thing}/jobs/notify-next", json.dumps(body))


class FakeMqtt:
    """adafruit_minimqtt.MQTT as mcu.jobs uses it: topic callbacks, subscribe, publish, loop."""

    def __init__(self, broker: FakeJobsBroker, socket_timeout: float = 1) -> None:
        self.broker = broker
        self._socket_timeout = socket_timeout
        self._subscribed_topics: list[str] = []
        self._callbacks = MQTTMatcher()
        self._inbox: deque[tuple[str, str]] = deque()
        self.connected = True
        self.events: list[str] = []
        self.published: list[tuple[str, str]] = []
        self.loops = 0

    def add_topic_callback(self, topic: str, cb: Any) -> None:
        self._callbacks[topic] = cb

    def remove_topic_callback(self, topic: str) -> None:
        del self._callbacks[topic]

    def is_connected(self) -> bool:
        return self.connected

    def connect(self) -> int:
        self.connected = True
        self.events.append("connect")
        return 0

    def disconnect(self) -> None:
        assert self.connected, "disconnect() while not connected"
        self.connected = False
        self._subscribed_topics = []
        self.events.append("disconnect")

    def subscribe(self, topic: Any, qos: int = 0) -> None:
        assert self.connected
        topics = [topic] if isinstance(topic, str) else [t for t, _ in topic]
        for t in topics:
            if t not in self._subscribed_topics:
                self._subscribed_topics.append(t)
        self.events.append("subscribe")

    def unsubscribe(self, topics: Any) -> None:
        for t in [topics] if isinstance(topics, str) else topics:
            if t in self._subscribed_topics:
                self._subscribed_topics.remove(t)

    def publish(self, topic: str, msg: str, retain: bool = False, qos: int = 0) -> None:
        assert self.connected, "publish() while disconnected"
        self.published.append((topic, msg))
        self.broker.handle(self, topic, msg)

    def deliver(self, topic: str, text: str) -> None:
        """Queue an incoming message (delivered by the next loop() if subscribed)."""
        self._inbox.append((topic, text))

    def _subscribed(self, topic: str) -> bool:
        m = MQTTMatcher()
        for t in self._subscribed_topics:
            m[t] = True
        return any(True for _ in m.iter_match(topic))

    def loop(self, timeout: float = 1.0) -> list[int] | None:
        assert self.connected
        if timeout < self._socket_timeout:
            raise ValueError("loop timeout must be >= socket timeout")
        self.loops += 1
        got = []
        while self._inbox:
            topic, text = self._inbox.popleft()
            if not self._subscribed(topic):
                continue
            for cb in self._callbacks.iter_match(topic):
                cb(self, topic, text)
            got.append(0x30)
        return got or None
