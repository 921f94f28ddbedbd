"""The windowed image upload.

Several chunks are in flight at once (the window, sized from the device's ``buf_count``)
and each is as large as the device's ``buf_size`` allows, so the line never idles while
the device writes flash.  The device accepts chunks only in order; a chunk it did not
expect gets a *success* reply carrying the offset it expects, which is how the upload
re-synchronises after a lost or corrupted chunk, and how it resumes a session after a
link drop (the first chunk carries the image's SHA-256; a device that already holds part
of that image answers with how far it got).  Devices without ``mcumgr params`` get
stop-and-wait with conservative chunks.

Upload packets are built here with cbor2 rather than with the ``smp`` package's models:
a pydantic validation per chunk costs more than the line does at high speed.  They are
canonical CBOR (keys by length, then bytewise), as ``smp`` encodes them, so a test can
check the bytes against ``smp.image_management.ImageUploadWriteRequest``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from host_bridge.errors import LinkError, SmpTimeout
from host_bridge.smp.client import GROUP_IMAGE, HEADER, SmpClient, check_reply, unpack_header

UPLOAD_ID = 1
DEFAULT_BUF_SIZE = 384  # Zephyr's default netbuf; used when the device has no params
FIRST_REPLY_TIMEOUT_S = 30.0  # the first chunk erases the slot: slow on real flash

Progress = Callable[[int, int], None]


@dataclass
class UploadResult:
    size: int
    sent_bytes: int  # payload bytes put on the wire (retransmissions included)
    resumed_from: int  # the device's offset when the upload was last (re)opened
    seconds: float
    window: int
    chunk: int
    match: bool | None
    resyncs: int
    retries: int  # timeouts and link drops recovered from, over the whole upload

    @property
    def rate(self) -> float:
        return (self.size - self.resumed_from) / self.seconds if self.seconds > 0 else 0.0


def upload_packet(
    version: int, seq: int, off: int, data: bytes, first: dict[str, object] | None = None
) -> bytes:
    """One image upload request packet (SMP header + canonical CBOR map)."""
    body: dict[str, object] = {}
    if first is not None:
        body.update(first)
    body["off"] = off
    body["data"] = data
    payload = cbor2.dumps(body, canonical=True)
    return HEADER.pack((version << 3) | 2, 0, len(payload), GROUP_IMAGE, seq, UPLOAD_ID) + payload


def chunk_sizes(buf_size: int, framing: str) -> tuple[int, int]:
    """(first, continuation) data sizes so each packet fits the device's buffer.

    The packet must fit ``buf_size`` with its 2-byte CRC in the console framing's netbuf;
    continuation overhead: map(1) + "off"(4+5) + "data"(5+3) + header(8); the first chunk
    adds "len"(4+5), "sha"(4+2+32), "image"(6+1) and room for "upgrade"(8+1).
    """
    limit = buf_size - (2 if framing == "console" else 0)
    cont = limit - 8 - 1 - 9 - 8
    first = cont - 9 - 38 - 7 - 9
    align = 8
    return max(32, first // align * align), max(align, cont // align * align)


def upload(
    client: SmpClient,
    image: bytes,
    *,
    window: int | None = None,
    buf_size: int | None = None,
    progress: Progress | None = None,
    upgrade: bool = False,
    max_retries: int = 8,
    timeout_s: float | None = None,
) -> UploadResult:
    """Upload ``image`` to slot 1; return when the device has acknowledged every byte."""
    start_t = time.monotonic()
    params = client.params() if (window is None or buf_size is None) else None
    if buf_size is None:
        buf_size = params.buf_size if params else DEFAULT_BUF_SIZE
    if window is None:
        window = max(1, params.buf_count - 1) if params else 1
    first_n, cont_n = chunk_sizes(buf_size, client.link.framing)
    size = len(image)
    sha = hashlib.sha256(image).digest()
    first_fields: dict[str, object] = {"image": 0, "len": size, "sha": sha}
    if upgrade:
        first_fields["upgrade"] = True
    wire_rate = client.link.baudrate / 10
    per_chunk_s = (cont_n * 1.4 + 64) / wire_rate
    timeout = timeout_s if timeout_s is not None else 2.0 + per_chunk_s * (window + 1)
    st = _State(size)

    def send(off: int) -> None:
        n = first_n if off == 0 else cont_n
        data = image[off : off + n]
        seq = client.next_seq()
        packet = upload_packet(
            int(client.version), seq, off, data, first_fields if off == 0 else None
        )
        client.link.send(packet)
        st.inflight.append((seq, off, len(data)))
        st.sent_bytes += len(data)

    # The first chunk alone: it opens (or resumes) the session and erases the slot.
    match = _first_chunk(client, send, st, max_retries)
    if progress:
        progress(st.acked, size)
    while st.acked < size:
        try:
            while len(st.inflight) < window and st.next_off < size:
                send(st.next_off)
                st.next_off = min(st.next_off + cont_n, size)
            reply = _next_reply(client, st, timeout)
        except LinkError:
            # The link dropped: reconnect and ask the device where it stands (off=0 + sha).
            st.retries += 1
            st.total_retries += 1
            if st.retries > max_retries:
                raise
            _reconnect(client)
            match = _first_chunk(client, send, st, max_retries)
            continue
        if reply is None:
            st.retries += 1
            st.total_retries += 1
            if st.retries > max_retries:
                raise SmpTimeout(
                    f"upload stalled at {st.acked} of {size} bytes: no reply after "
                    f"{max_retries} retries"
                )
            _recover(client, st)
            continue
        _seq, off, n, body = reply
        device_off = int(body.get("off", -1))
        if "match" in body:
            match = bool(body["match"])
        if device_off == off + n:
            st.acked = max(st.acked, device_off)
            st.retries = 0
        else:
            # The device wants another offset: everything after it in flight is void.
            st.resyncs += 1
            st.inflight.clear()
            st.acked = max(0, min(device_off, size))
            st.next_off = st.acked
            if device_off == 0:
                match = _first_chunk(client, send, st, max_retries)
        if progress:
            progress(st.acked, size)
    return UploadResult(
        size, st.sent_bytes, st.resumed_from, time.monotonic() - start_t, window, cont_n,
        match, st.resyncs, st.total_retries,
    )


class _State:
    def __init__(self, size: int) -> None:
        self.size = size
        self.acked = 0
        self.next_off = 0
        self.inflight: list[tuple[int, int, int]] = []  # (seq, off, len), oldest first
        self.sent_bytes = 0
        self.resumed_from = 0
        self.resyncs = 0
        self.retries = 0  # consecutive failures, against max_retries
        self.total_retries = 0


def _first_chunk(
    client: SmpClient, send: Callable[[int], None], st: _State, max_retries: int
) -> bool | None:
    """Send off=0 until acknowledged; the reply says where the device stands.

    A device that took the chunk answers with its length; any other offset means it kept
    an earlier, unfinished upload of this image (or already holds all of it) and dropped the data.
    """
    match: bool | None = None
    for attempt in range(max_retries + 1):
        st.inflight.clear()
        try:
            send(0)
            reply = _next_reply(client, st, FIRST_REPLY_TIMEOUT_S)
        except LinkError:
            if attempt == max_retries:
                raise
            _reconnect(client)
            continue
        if reply is None:
            continue
        _seq, _off, n, body = reply
        if "match" in body:
            match = bool(body["match"])
        st.acked = min(int(body.get("off", 0)), st.size)
        st.resumed_from = 0 if st.acked == n else st.acked
        st.next_off = st.acked
        st.inflight.clear()
        return match
    raise SmpTimeout(f"the device did not answer the first upload chunk ({max_retries} tries)")


def _next_reply(
    client: SmpClient, st: _State, timeout_s: float
) -> tuple[int, int, int, dict[str, Any]] | None:
    """The reply to the oldest chunk in flight; stale or foreign replies are skipped."""
    deadline = time.monotonic() + timeout_s
    while st.inflight:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        packet = client.link.recv(left)
        if packet is None:
            return None
        if len(packet) < 8:
            continue
        op, _v, _f, _l, group, seq, cid = unpack_header(packet)
        if op != 3 or group != GROUP_IMAGE or cid != UPLOAD_ID:
            continue
        for i, (s, off, n) in enumerate(st.inflight):
            if s == seq:
                del st.inflight[: i + 1]  # replies come in order: older ones were lost
                try:
                    body = cbor2.loads(packet[8:])
                except (cbor2.CBORDecodeError, ValueError):
                    body = None  # check_reply reports a malformed reply
                return seq, off, n, check_reply(body, GROUP_IMAGE, f"upload at offset {off}")
    return None


def _recover(client: SmpClient, st: _State) -> None:
    """After a timeout: drop what is in flight and restart from the last acknowledged byte."""
    st.inflight.clear()
    st.next_off = st.acked
    if st.retries >= 3:
        _reconnect(client)


def _reconnect(client: SmpClient) -> None:
    try:
        client.link.reopen()
    except LinkError:
        time.sleep(0.5)
