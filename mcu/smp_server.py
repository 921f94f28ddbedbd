# SMP server core: decodes a request packet, dispatches it to a group handler and encodes
# the response, with Zephyr's header, version and error rules.  Runs on the MCU.
#
# A handler is a callable (server, op, version, request_map) -> (reply_map or None).
# It returns a map for success, or raises SmpError for SMP-level errors (rc) and
# GroupError for group errors ({"err": {"group", "rc"}} under SMPv2, rc under SMPv1).

from mcu import cbor
from mcu import smp_header as sh

try:
    from typing import Any, Callable, Dict, Optional  # noqa: F401 - type comments
except ImportError:
    pass


class SmpError(Exception):
    """An SMP-level error: the reply is {"rc": rc} in both protocol versions."""

    def __init__(self, rc: int) -> None:
        super().__init__(rc)
        self.rc = rc


class GroupError(Exception):
    """A group error: {"err": {"group": g, "rc": rc}} in SMPv2, a legacy rc in SMPv1."""

    def __init__(self, group: int, rc: int) -> None:
        super().__init__(group, rc)
        self.group = group
        self.rc = rc


class SmpServer:
    """Dispatch table of (group, command) -> handler; ``handle`` is bytes in, bytes out."""

    def __init__(self, buf_size: int = 2048, buf_count: int = 4) -> None:
        self.buf_size = buf_size
        self.buf_count = buf_count
        self._handlers = {}  # type: Dict[int, Any]
        self._translate = {}  # type: Dict[int, Any]
        self.after_reply = None  # type: Optional[Callable[[], None]]

    def register(self, group: int, command: int, handler: "Any") -> None:
        self._handlers[(group << 8) | command] = handler

    def set_translator(self, group: int, fn: "Any") -> None:
        """Map a group's error codes to legacy SMPv1 rc values (as Zephyr groups do)."""
        self._translate[group] = fn

    def handle(self, packet: bytes) -> "Optional[bytes]":
        """One request packet in; the response packet out (None: stay silent).

        As Zephyr's smp_process_request_packet (built without CONFIG_SMP_CLIENT): under 8
        bytes there is no header to answer; a header announcing more payload than the packet
        holds gets ECORRUPT; any op but read or write (responses included) gets ENOTSUP.
        Bytes after the announced payload are ignored (Zephyr would parse them as a further
        request in the same packet; no client sends that).
        """
        if len(packet) < sh.HEADER_SIZE:
            return None
        op, version, _flags, length, group, seq, command = sh.unpack_header(packet)
        if sh.HEADER_SIZE + length > len(packet):
            return self._reply(op, version, group, seq, command, {"rc": sh.RC_ECORRUPT})
        if op != sh.OP_READ and op != sh.OP_WRITE:
            return self._reply(op, version, group, seq, command, {"rc": sh.RC_ENOTSUP})
        if version > sh.VERSION_2:
            return self._reply(
                op, sh.VERSION_2, group, seq, command, {"rc": sh.RC_UNSUPPORTED_TOO_NEW}
            )
        handler = self._handlers.get((group << 8) | command)
        if handler is None:
            return self._reply(op, version, group, seq, command, {"rc": sh.RC_ENOTSUP})
        try:
            if length:
                req = cbor.decode(packet, sh.HEADER_SIZE, sh.HEADER_SIZE + length, bytes_view=True)
            else:
                req = {}
        except cbor.CborError:
            return self._reply(op, version, group, seq, command, {"rc": sh.RC_EINVAL})
        if not isinstance(req, dict):
            return self._reply(op, version, group, seq, command, {"rc": sh.RC_EINVAL})
        try:
            rsp = handler(self, op, version, req)
        except SmpError as e:
            rsp = {"rc": e.rc}
        except GroupError as e:
            if version == sh.VERSION_2:
                rsp = {"err": {"group": e.group, "rc": e.rc}}
            else:
                fn = self._translate.get(e.group)
                rsp = {"rc": fn(e.rc) if fn else sh.RC_EUNKNOWN}
        except MemoryError:
            rsp = {"rc": sh.RC_ENOMEM}
        except Exception:
            # One bad operation (a flash driver error, a bug) must not end the receiver: as
            # Zephyr's smp_handle_single_req answers a handler's failure with smp_build_err_rsp,
            # the client gets MGMT_ERR_EUNKNOWN, a legacy rc in both versions, and the loop goes
            # on.  Handlers leave their state as before the request (the image group ends an
            # upload session, so its offset never moves past data that did not reach flash).
            rsp = {"rc": sh.RC_EUNKNOWN}
        if rsp is None:
            return None
        return self._reply(op, version, group, seq, command, rsp)

    def _reply(
        self, op: int, version: int, group: int, seq: int, command: int, body: "Dict[str, Any]"
    ) -> bytes:
        # smp_make_rsp_hdr: READ_RSP for a read, WRITE_RSP for anything else; the version
        # is the request's, capped at SMPv2.
        payload = cbor.encode(body)
        rsp_op = sh.OP_READ_RSP if op == sh.OP_READ else sh.OP_WRITE_RSP
        if version > sh.VERSION_2:
            version = sh.VERSION_2
        hdr = sh.pack_header(rsp_op, version, 0, len(payload), group, seq, command)
        return hdr + payload


def field(req: "Dict[str, Any]", key: str, kind: "Any", default: "Any" = None) -> "Any":
    """A typed field of a request map; a wrong type is EINVAL, as zcbor decoding fails."""
    if key not in req:
        return default
    value = req[key]
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SmpError(sh.RC_EINVAL)
    elif kind is bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise SmpError(sh.RC_EINVAL)
    elif kind is bool:
        if not isinstance(value, bool):
            raise SmpError(sh.RC_EINVAL)
    elif kind is str:
        if not isinstance(value, str):
            raise SmpError(sh.RC_EINVAL)
    return value
