"""A synchronous SMP client: requests, replies matched by sequence number, errors as values.

Request messages come from the ``smp`` package (its pydantic models and encoder); replies
are decoded with cbor2 and checked against SMP's two error forms.  The client is written
here rather than taken from smpclient because smpclient is asyncio-only and uploads
stop-and-wait; the bridge needs a windowed upload (see ``upload.py``) and plain threads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import cbor2
from smp import header as smph
from smp import image_management as smpimg
from smp import os_management as smpos
from smp.error import MGMT_ERR

from fota_common.errors import DeviceError, LinkError, SmpTimeout
from host_bridge.smp.link import SerialLink
from mcu import smp_header as sh

GROUP_OS = 0
GROUP_IMAGE = 1

_GROUP_ERRORS: dict[int, Any] = {
    GROUP_OS: smpos.OS_MGMT_RET_RC,
    GROUP_IMAGE: smpimg.IMG_MGMT_ERR,
}


def rc_name(rc: int, group: int | None = None) -> str:
    """A readable name for an SMP rc or a group error code."""
    table = _GROUP_ERRORS.get(group) if group is not None else MGMT_ERR
    try:
        return str(table(rc).name) if table is not None else str(rc)
    except ValueError:
        return str(rc)


@dataclass(frozen=True)
class SlotState:
    """One row of an image state read."""

    slot: int
    version: str
    hash: bytes
    active: bool = False
    confirmed: bool = False
    pending: bool = False
    permanent: bool = False
    bootable: bool = True
    image: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "slot": self.slot,
            "version": self.version,
            "hash": self.hash.hex(),
            "active": self.active,
            "confirmed": self.confirmed,
            "pending": self.pending,
            "permanent": self.permanent,
            "bootable": self.bootable,
        }


@dataclass(frozen=True)
class Params:
    buf_size: int
    buf_count: int


def unpack_header(packet: bytes) -> tuple[int, int, int, int, int, int, int]:
    """(op, version, flags, length, group, seq, command_id) of an SMP packet.

    The one SMP header codec is mcu.smp_header (the receiver's); this only types it.
    """
    fields: tuple[int, int, int, int, int, int, int] = sh.unpack_header(packet)
    return fields


def pack_header(op: int, version: int, length: int, group: int, seq: int, command: int) -> bytes:
    """The 8 header bytes of a request (flags 0), by the one codec in mcu.smp_header."""
    header: bytes = sh.pack_header(op, version, 0, length, group, seq, command)
    return header


def check_reply(body: Any, group: int, what: str) -> dict[str, Any]:
    """Raise DeviceError for either SMP error form; return the reply map."""
    if not isinstance(body, dict):
        raise DeviceError(f"{what}: the device sent a malformed reply", MGMT_ERR.EINVAL)
    err = body.get("err")
    if isinstance(err, dict) and err.get("rc", 0):
        g, rc = err.get("group", group), err["rc"]
        if not (_is_uint(g) and _is_uint(rc)):
            raise DeviceError(f"{what}: the device sent a malformed error reply", MGMT_ERR.EINVAL)
        raise DeviceError(f"{what}: device error {rc_name(rc, g)} (group {g}, rc {rc})", rc, g)
    rc = body.get("rc", 0)
    if rc not in (0, None):
        if not _is_uint(rc):
            raise DeviceError(f"{what}: the device sent a malformed error reply", MGMT_ERR.EINVAL)
        raise DeviceError(f"{what}: device error {rc_name(rc)} (rc {rc})", rc)
    return body


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 32


class SmpClient:
    """Requests over a :class:`SerialLink`, with timeouts, retries and SMPv2->v1 fallback."""

    def __init__(self, link: SerialLink, timeout_s: float = 2.0, retries: int = 2) -> None:
        self.link = link
        self.timeout_s = timeout_s
        self.retries = retries
        self.version = smph.Version.V2
        self.erase_timeout_s = 30.0  # erasing a whole slot takes seconds on real flash
        self._seq = 0

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    # -- request/response ------------------------------------------------------------
    def call(
        self,
        cls: Any,
        fields: dict[str, Any],
        what: str,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> dict[str, Any]:
        """Send an ``smp`` request (its class and fields); return the checked reply map.

        ``retries`` (default: the client's) re-sends after a timeout or a link error; pass
        0 for a request that must not reach the device twice.  The one SMPv2 -> v1 fallback
        is not counted as a retry.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        attempts = (self.retries if retries is None else retries) + 1
        last: Exception | None = None
        while attempts > 0:
            attempts -= 1
            req = cls(**fields, sequence=self.next_seq(), version=self.version)
            packet = bytes(req)
            seq = packet[6]
            try:
                self.link.send(packet)
                reply = self.wait_reply(seq, packet[4] << 8 | packet[5], packet[7], timeout)
            except LinkError as exc:
                last = exc
                self.link.close()
                continue
            if reply is None:
                last = SmpTimeout(f"{what}: no reply from {self.link.url} within {timeout:g} s")
                continue
            _op, version, _f, _len, group, _seq, _cid = unpack_header(reply)
            try:
                body = cbor2.loads(reply[8:]) if len(reply) > 8 else {}
            except (cbor2.CBORDecodeError, ValueError):
                body = None  # check_reply reports a malformed reply
            too_new = isinstance(body, dict) and body.get("rc") == MGMT_ERR.UNSUPPORTED_TOO_NEW
            if self.version == smph.Version.V2 and (version == 0 or too_new):
                self.version = smph.Version.V1  # the device speaks SMPv1 only
                if too_new:
                    attempts += 1  # the request itself never ran: send it again as v1
                    continue
            return check_reply(body, group, what)
        assert last is not None
        raise last

    def wait_reply(self, seq: int, group: int, cid: int, timeout_s: float) -> bytes | None:
        """Wait for the reply with this sequence number; skip stale replies."""
        remaining = timeout_s
        deadline = time.monotonic() + timeout_s
        while remaining > 0:
            packet = self.link.recv(remaining)
            if packet is None:
                return None
            if len(packet) >= 8:
                op, _v, _f, _l, g, s, c = unpack_header(packet)
                if op in (1, 3) and s == seq and g == group and c == cid:
                    return packet
            remaining = deadline - time.monotonic()
        return None

    # -- commands --------------------------------------------------------------------
    def echo(self, text: str) -> str:
        return str(self.call(smpos.EchoWriteRequest, {"d": text}, "echo").get("r", ""))

    def params(self) -> Params | None:
        """mcumgr params, or None for devices without the command."""
        try:
            r = self.call(smpos.MCUMgrParametersReadRequest, {}, "mcumgr params")
        except DeviceError:
            return None
        size, count = r.get("buf_size"), r.get("buf_count")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (size, count)):
            raise DeviceError("mcumgr params: the device sent a malformed reply", MGMT_ERR.EINVAL)
        assert isinstance(size, int) and isinstance(count, int)
        return Params(size, count)

    def image_state(self) -> list[SlotState]:
        r = self.call(smpimg.ImageStatesReadRequest, {}, "image state read")
        return self._slots(r)

    def state_write(self, hash_: bytes | None, confirm: bool) -> list[SlotState]:
        fields: dict[str, Any] = {"confirm": confirm}
        if hash_ is not None:
            fields["hash"] = hash_
        what = "image state write (confirm)" if confirm else "image state write (test)"
        r = self.call(smpimg.ImageStatesWriteRequest, fields, what)
        return self._slots(r)

    def reset(self) -> None:
        """Reset the device; sent once: a second reset could land on the image the first
        one booted for a test, before it confirms itself, and make MCUboot revert it."""
        self.call(smpos.ResetWriteRequest, {}, "reset", retries=0)

    def erase(self, slot: int = 1) -> None:
        self.call(
            smpimg.ImageEraseRequest, {"slot": slot}, "image erase", timeout_s=self.erase_timeout_s
        )

    def slot_info(self) -> dict[str, Any] | None:
        """Slot sizes (image group command 6), or None where unsupported."""
        seq = self.next_seq()
        packet = pack_header(0, int(self.version), 1, GROUP_IMAGE, seq, 6) + b"\xa0"
        self.link.send(packet)
        reply = self.wait_reply(seq, GROUP_IMAGE, 6, self.timeout_s)
        if reply is None:
            return None
        try:
            body = cbor2.loads(reply[8:])
        except (cbor2.CBORDecodeError, ValueError):
            return None
        if not isinstance(body, dict) or "images" not in body:
            return None
        return body

    @classmethod
    def _slots(cls, r: dict[str, Any]) -> list[SlotState]:
        images = r.get("images", [])
        if not isinstance(images, list):
            raise DeviceError("image state: the device sent a malformed reply", MGMT_ERR.EINVAL)
        return [cls._slot(d) for d in images]

    @staticmethod
    def _slot(d: Any) -> SlotState:
        """One image state entry; anything off-spec is a malformed reply, not a crash."""
        if not isinstance(d, dict):
            raise DeviceError("image state: the device sent a malformed reply", MGMT_ERR.EINVAL)
        ints = {k: d.get(k, 0) for k in ("slot", "image")}
        flags = {
            k: d.get(k, k == "bootable")
            for k in ("active", "confirmed", "pending", "permanent", "bootable")
        }
        version, digest = d.get("version", ""), d.get("hash", b"")
        if (
            any(isinstance(v, bool) or not isinstance(v, int) for v in ints.values())
            or any(not isinstance(v, bool) for v in flags.values())
            or not isinstance(version, str)
            or not isinstance(digest, bytes)
        ):
            raise DeviceError("image state: the device sent a malformed reply", MGMT_ERR.EINVAL)
        return SlotState(hash=digest, version=version, **ints, **flags)
