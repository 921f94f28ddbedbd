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

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from fota_common.errors import DeviceError, LinkError, SmpTimeout
from host_bridge.smp.client import (
    GROUP_IMAGE,
    SmpClient,
    check_reply,
    pack_header,
    unpack_header,
)
from host_bridge.smp.image_file import Image, image_sha256
from host_bridge.smp.window import (
    FIRST_CHUNK_MAX,
    MIN_CHUNK,
    PROBE_AFTER_S,
    STUCK_LIMIT,
    UploadState,
)

UPLOAD_ID = 1
DEFAULT_BUF_SIZE = 384  # Zephyr's default netbuf; used when the device has no params
FIRST_REPLY_TIMEOUT_S = 30.0  # the first chunk erases the slot: slow on real flash
CONSOLE_FRAME_OVERHEAD = 4  # a console frame's length and CRC share the device's netbuf

UploadProgress = Callable[[int, int], None]  # (bytes done, total)


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
    return pack_header(2, version, len(payload), GROUP_IMAGE, seq, UPLOAD_ID) + payload


def chunk_sizes(buf_size: int, framing: str) -> tuple[int, int]:
    """(first, continuation) data sizes so each packet fits the device's buffer.

    ``buf_size`` is the device's netbuf (mcumgr params).  Console framing: Zephyr's
    mcumgr_serial_process_frag base64-decodes a frame's 2-byte length, the packet and its
    2-byte CRC into one netbuf (mcumgr_serial_decode_frag stops at its tailroom), so the
    packet is at most ``buf_size - 4``.  Raw framing: the packet itself, header included,
    is at most ``buf_size``.  Continuation overhead: map(1) + "off"(4+5) + "data"(5+3) +
    header(8); the first chunk adds "len"(4+5), "sha"(4+2+32), "image"(6+1) and room for
    "upgrade"(8+1).
    """
    limit = buf_size - (CONSOLE_FRAME_OVERHEAD if framing == "console" else 0)
    cont = limit - 8 - 1 - 9 - 8
    first = cont - 9 - 38 - 7 - 9
    align = 8
    return max(32, first // align * align), max(align, cont // align * align)


def upload(
    client: SmpClient,
    image: Image,
    *,
    window: int | None = None,
    buf_size: int | None = None,
    progress: UploadProgress | None = None,
    upgrade: bool = False,
    max_retries: int = 8,
    timeout_s: float | None = None,
) -> UploadResult:
    """Upload ``image`` (bytes, or an :class:`ImageFile`) to slot 1; return when the device
    has acknowledged every byte.

    If the device's hash of the finished image does not match (a corruption that got past
    the CRC), the slot is erased and the image sent once more before giving up.
    """
    start_t = time.monotonic()
    params = client.params() if (window is None or buf_size is None) else None
    if buf_size is None:
        buf_size = params.buf_size if params else DEFAULT_BUF_SIZE
    if window is None:
        window = max(1, params.buf_count - 1) if params else 1
    first_n, cont_n = chunk_sizes(buf_size, client.link.framing)
    # The first chunk travels alone while the device erases the slot, so its size buys no
    # throughput; kept small, it survives a noisy line (it is re-sent whole when lost).
    first_n = min(first_n, FIRST_CHUNK_MAX)
    st = UploadState(len(image), first_n, cont_n, window, client.link.baudrate, timeout_s)
    for attempt in range(2):
        match = _run(client, image, st, upgrade, max_retries, progress)
        if match is not False or attempt == 1:
            break
        client.erase(1)  # the device hashed a different image: start again, clean
        st.restart()
    return UploadResult(
        st.size,
        st.sent_bytes,
        st.resumed_from,
        time.monotonic() - start_t,
        window,
        cont_n,
        match,
        st.resyncs,
        st.total_retries,
    )


def _run(
    client: SmpClient,
    image: Image,
    st: UploadState,
    upgrade: bool,
    max_retries: int,
    progress: UploadProgress | None,
) -> bool | None:
    size = st.size
    first_fields: dict[str, object] = {
        "image": 0,
        "len": size,
        "sha": image_sha256(image),
    }
    if upgrade:
        first_fields["upgrade"] = True

    def send(off: int) -> None:
        n = st.first_n if off == 0 else st.chunk
        data = image[off : off + n]
        seq = client.next_seq()
        packet = upload_packet(
            int(client.version), seq, off, data, first_fields if off == 0 else None
        )
        client.link.send(packet)
        st.inflight.append((seq, off, len(data), time.monotonic()))
        st.sent_bytes += len(data)

    # The first chunk alone: it opens (or resumes) the session and erases the slot.
    match = _first_chunk(client, send, st, max_retries)
    if progress:
        progress(st.acked, size)
    while st.acked < size:
        try:
            while len(st.inflight) < st.window and st.next_off < size:
                off = st.next_off
                send(off)
                st.next_off = min(off + st.inflight[-1][2], size)
            reply = _next_reply(client, st, st.timeout())
        except LinkError:
            # The link dropped: reconnect and ask the device where it stands (off=0 + sha).
            _failed(st, max_retries, "the link kept failing")
            _reconnect(client)
            match = _first_chunk(client, send, st, max_retries)
            continue
        if reply is None:
            _failed(st, max_retries, "no reply")
            st.lost()
            _recover(client, st)
            continue
        _seq, off, n, sent_at, body = reply
        device_off = _offset(body, -1)
        if "match" in body:
            match = bool(body["match"])
        if device_off > size:
            raise DeviceError(
                f"upload: the device claims offset {device_off} of a {size}-byte image", 3, 1
            )
        if device_off == off + n:
            st.acked = max(st.acked, device_off)
            st.retries = 0
            st.stuck = 0
            st.delivered(sent_at)
        else:
            # The device wants another offset: everything after it in flight is void.
            st.stuck += 1
            if st.stuck > STUCK_LIMIT:
                raise DeviceError(
                    f"upload: the device keeps asking for offset {device_off} and takes no data "
                    f"({STUCK_LIMIT} re-synchronisations without progress)",
                    1,
                    1,
                )
            st.resyncs += 1
            st.lost()
            st.inflight.clear()
            st.acked = max(0, min(device_off, size))
            st.next_off = st.acked
            if device_off == 0:
                match = _first_chunk(client, send, st, max_retries)
        if progress:
            progress(st.acked, size)
    return match


def _offset(body: dict[str, Any], default: int) -> int:
    off = body.get("off", default)
    if isinstance(off, bool) or not isinstance(off, int) or off < -1:
        raise DeviceError("upload: the device sent a malformed reply (bad 'off')", 3, 1)
    return off


def _failed(st: UploadState, max_retries: int, what: str) -> None:
    st.retries += 1
    st.total_retries += 1
    if st.retries > max_retries:
        raise SmpTimeout(
            f"upload stalled at {st.acked} of {st.size} bytes: {what} after {max_retries} retries"
        )


def _first_chunk(
    client: SmpClient, send: Callable[[int], None], st: UploadState, max_retries: int
) -> bool | None:
    """Send off=0 until acknowledged; the reply says where the device stands.

    A device that took the chunk answers with its length; any other offset means it kept
    an earlier, unfinished upload of this image (or already holds all of it) and dropped
    the data.  The first reply is slow on real flash (the slot is erased first), so when
    it is late an echo is sent behind it: the device answers in order, so an echo reply
    arriving first proves the chunk was lost, and it is re-sent at once.
    """
    match: bool | None = None
    for attempt in range(max_retries + 1):
        st.inflight.clear()
        try:
            send(0)
            reply = _next_reply(client, st, PROBE_AFTER_S)
            if reply is None and st.inflight:
                reply = _probe_then_wait(client, st)
        except LinkError:
            if attempt == max_retries:
                raise
            st.total_retries += 1
            _reconnect(client)
            continue
        if reply is None:
            st.total_retries += 1
            st.first_n = max(MIN_CHUNK, st.first_n // 2 // 8 * 8)
            continue
        _seq, _off, n, _t, body = reply
        if "match" in body:
            match = bool(body["match"])
        device_off = _offset(body, 0)
        if device_off > st.size:
            raise DeviceError(
                f"upload: the device claims offset {device_off} of a {st.size}-byte image", 3, 1
            )
        st.acked = device_off
        st.resumed_from = 0 if st.acked == n else st.acked
        st.next_off = st.acked
        st.inflight.clear()
        return match
    raise SmpTimeout(f"the device did not answer the first upload chunk ({max_retries} tries)")


def _probe_then_wait(
    client: SmpClient, st: UploadState
) -> tuple[int, int, int, float, dict[str, Any]] | None:
    """Echo probes behind the first chunk, re-sent while both stay unanswered."""
    chunk = list(st.inflight)
    probes: set[int] = set()
    deadline = time.monotonic() + FIRST_REPLY_TIMEOUT_S
    while time.monotonic() < deadline:
        seq = client.next_seq()
        body = cbor2.dumps({"d": "probe"})
        probe = pack_header(2, int(client.version), len(body), 0, seq, 0) + body
        client.link.send(probe)
        probes.add(seq)
        st.inflight = [*chunk, (seq, -1, 0, time.monotonic())]
        reply = _next_reply(client, st, PROBE_AFTER_S * 2, echo_seqs=probes)
        if reply is not None:
            return None if reply[1] == -1 else reply  # an echo first: the chunk was lost
    return None


def _next_reply(
    client: SmpClient, st: UploadState, timeout_s: float, echo_seqs: set[int] | None = None
) -> tuple[int, int, int, float, dict[str, Any]] | None:
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
        if echo_seqs and op == 3 and group == 0 and cid == 0 and seq in echo_seqs:
            st.inflight.clear()
            return seq, -1, 0, 0.0, {}
        if op != 3 or group != GROUP_IMAGE or cid != UPLOAD_ID:
            continue
        for i, (s, off, n, sent_at) in enumerate(st.inflight):
            if s == seq:
                del st.inflight[: i + 1]  # replies come in order: older ones were lost
                try:
                    body = cbor2.loads(packet[8:])
                except (cbor2.CBORDecodeError, ValueError):
                    body = None  # check_reply reports a malformed reply
                checked = check_reply(body, GROUP_IMAGE, f"upload at offset {off}")
                return seq, off, n, sent_at, checked
    return None


def _recover(client: SmpClient, st: UploadState) -> None:
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
