"""SMP header codec: the 8-byte header every SMP packet starts with, and the SMP numbers.

Byte 0 = Res[7:5] Ver[4:3] OP[2:0], flags, length u16 BE, group u16 BE, seq u8, command id u8.
Also the op codes, protocol versions, group ids, OS and image group command ids and the
SMP-level ``rc`` values (MGMT_ERR_*).  Runs on the microcontroller; host code and tests
import it too (usually through mcu.smp_frame, which re-exports these names).
"""

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


HEADER_SIZE = const(8)
_HEADER_FMT = ">BBHHBB"
assert struct.calcsize(_HEADER_FMT) == HEADER_SIZE

OP_READ = const(0)
OP_READ_RSP = const(1)
OP_WRITE = const(2)
OP_WRITE_RSP = const(3)

VERSION_1 = const(0)
VERSION_2 = const(1)

GROUP_OS = const(0)
GROUP_IMAGE = const(1)
GROUP_STAT = const(2)
GROUP_SETTINGS = const(3)
GROUP_LOG = const(4)
GROUP_CRASH = const(5)
GROUP_SPLIT = const(6)
GROUP_RUN = const(7)
GROUP_FS = const(8)
GROUP_SHELL = const(9)
GROUP_ENUM = const(10)
GROUP_ZEPHYR_BASIC = const(63)
GROUP_PERUSER = const(64)

# OS group command ids
OS_ECHO = const(0)
OS_CONS_ECHO_CTRL = const(1)
OS_TASKSTAT = const(2)
OS_MPSTAT = const(3)
OS_DATETIME = const(4)
OS_RESET = const(5)
OS_MCUMGR_PARAMS = const(6)
OS_INFO = const(7)
OS_BOOTLOADER_INFO = const(8)

# Image group command ids
IMG_STATE = const(0)
IMG_UPLOAD = const(1)
IMG_FILE = const(2)
IMG_CORELIST = const(3)
IMG_CORELOAD = const(4)
IMG_ERASE = const(5)
IMG_SLOT_INFO = const(6)

# SMP-level `rc` values (MGMT_ERR_*)
RC_EOK = const(0)
RC_EUNKNOWN = const(1)
RC_ENOMEM = const(2)
RC_EINVAL = const(3)
RC_ETIMEOUT = const(4)
RC_ENOENT = const(5)
RC_EBADSTATE = const(6)
RC_EMSGSIZE = const(7)
RC_ENOTSUP = const(8)
RC_ECORRUPT = const(9)
RC_EBUSY = const(10)
RC_EACCESSDENIED = const(11)
RC_UNSUPPORTED_TOO_OLD = const(12)
RC_UNSUPPORTED_TOO_NEW = const(13)
RC_EPERUSER = const(256)


def pack_header(op, version, flags, length, group, seq, command) -> bytes:
    """The 8 header bytes, fields in wire order."""
    out = bytearray(HEADER_SIZE)
    pack_header_into(out, 0, op, version, flags, length, group, seq, command)
    return bytes(out)


def pack_header_into(buf, offset, op, version, flags, length, group, seq, command) -> None:
    """Write the header into buf[offset:offset + 8], e.g. in front of an encoded reply."""
    # Checked here: MicroPython's struct would silently truncate out-of-range fields.
    if not (
        0 <= op <= 7
        and 0 <= version <= 3
        and 0 <= flags <= 0xFF
        and 0 <= length <= 0xFFFF
        and 0 <= group <= 0xFFFF
        and 0 <= seq <= 0xFF
        and 0 <= command <= 0xFF
    ):
        raise ValueError("SMP header field out of range")
    struct.pack_into(
        _HEADER_FMT, buf, offset, (version << 3) | op, flags, length, group, seq, command
    )


def unpack_header(buf, offset=0):
    """(op, version, flags, length, group, seq, command) from buf[offset:offset + 8].

    The reserved bits are ignored. Raises ValueError if fewer than 8 bytes are there.
    """
    if len(buf) - offset < HEADER_SIZE or offset < 0:
        raise ValueError("SMP header needs %d bytes" % HEADER_SIZE)
    b0, flags, length, group, seq, command = struct.unpack_from(_HEADER_FMT, buf, offset)
    return b0 & 7, (b0 >> 3) & 3, flags, length, group, seq, command
