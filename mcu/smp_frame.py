"""SMP packets over a serial line: Zephyr's console framing and raw framing.

Written by hand because it runs on the microcontroller, where the `smp` package is not
available; the same file is imported by host code and tests, which check it against `smp`.

Console framing (Zephyr's serial_util.c, the "SMP over console" transport), one packet:
    line 1:    0x06 0x09  base64(u16 BE length, packet bytes...)  0x0a
    line 2..:  0x04 0x14  base64(packet bytes..., CRC-16/XMODEM BE)  0x0a
where length = len(packet) + 2 and the CRC covers the packet only. Each line is base64-decoded
on its own, so every line carries whole base64 quads. Lines starting otherwise are console text.

Raw framing (Zephyr's raw UART transport): packets back to back, each delimited by its header's
length field (8 + length bytes); a partial packet is dropped after an idle gap.

Decoders take bytes as they arrive from the port, never raise, and return complete packets.

The SMP header codec and numbers are mcu.smp_header's; they are re-exported here, so that
``from mcu import smp_frame as sf`` gives the whole wire format (sf.pack_header, sf.OP_READ...).
"""

import struct
from binascii import a2b_base64, b2a_base64

from mcu.crc16 import crc16_xmodem

# The header codec, re-exported (see above).
from mcu.smp_header import *  # noqa: F403
from mcu.smp_header import HEADER_SIZE, OP_WRITE_RSP

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# ---------------------------------------------------------------------------------------------
# Console framing

_PKT_START = b"\x06\x09"
_PKT_CONT = b"\x04\x14"
_CR = const(0x0D)

LINE_LIMIT = const(127)  # MCUMGR_SERIAL_MAX_FRAME: marker + base64 + newline
DEFAULT_MAX_PACKET = const(4096)  # SMP header + CBOR; a server passes its buf_size


def encode_console(packet, line_limit=LINE_LIMIT) -> bytes:
    """All the lines for one packet, split exactly as Zephyr's mcumgr_serial_tx_pkt splits.

    Each line holds a whole number of 3-byte groups (4 base64 characters) and is at most
    `line_limit` bytes long, marker and newline included: 124 base64 characters (93 bytes)
    on the first line, whose first group is the length and the packet's first byte. Zephyr
    takes that group out of its per-line budget once and never puts it back, so continuation
    lines carry at most 90 bytes (120 characters). The 2 CRC bytes are never split from the
    packet's last bytes: a final line that could not hold them leaves one group for a line
    of its own.
    """
    n = len(packet)
    budget = ((line_limit - 3) >> 2) * 3
    if n == 0 or budget < 9:
        # Below 3 groups a line (line_limit 15) the CRC rule would never let a line end.
        raise ValueError("empty packet or line limit too small")
    crc = crc16_xmodem(packet)
    out = bytearray()
    src = 0
    first = True
    while src < n:
        raw = bytearray()
        if first:
            out.extend(_PKT_START)
            raw.extend(struct.pack(">H", n + 2))
            raw.append(packet[0])
            src = 1
            budget -= 3
        else:
            out.extend(_PKT_CONT)
        left = n - src
        take = budget if left > budget else left
        spare = budget - left
        last = spare >= 2
        if spare == 0 or spare == 1:
            take -= 1
        take -= take % 3
        raw.extend(packet[src : src + take])
        src += take
        if last:
            raw.extend(packet[src:n])
            src = n
            raw.append(crc >> 8)
            raw.append(crc & 0xFF)
        out.extend(b2a_base64(raw))  # ends with the newline
        first = False
    return bytes(out)


class ConsoleDecoder:
    """Reassembles console-framed packets from arbitrary chunks of serial input.

    It follows Zephyr's mcumgr_serial_process_frag and uart_mcumgr driver: a line starting
    0x06 0x09 starts a new packet (dropping any partial one); a 0x04 0x14 line continues it,
    and is ignored while no packet is in progress; any other line is console text and is
    ignored; a line longer than `max_line` bytes (newline included) is ignored whole. Each
    line is base64-decoded on its own: a line that does not decode, a packet that decodes
    past its announced length, a length over `max_packet` + 2 and a bad CRC drop the packet.

    Base64 is checked without a per-character loop: the C decoder skips characters outside
    the alphabet and stops at padding, so a line is refused unless its length is exactly
    that of the canonical encoding of what came out. Unlike Zephyr, a line ending in a
    partial quad or in spaces is refused rather than cut short; a trailing CR is allowed, as
    Zephyr does. No transmitter sends either.

    The only buffers are a line buffer of `max_line` bytes, for lines split across feed()
    calls, and each packet's own bytearray, allocated once its length is announced and
    returned as it is, so a packet's bytes are copied once, from base64.
    """

    def __init__(self, max_packet=DEFAULT_MAX_PACKET, max_line=LINE_LIMIT):
        self._cap = max_packet + 2  # announced lengths count the CRC
        self._pkt = None  # the packet in progress: packet bytes then CRC
        self._have = 0  # bytes in _pkt; 0 = no packet in progress
        self._max_line = max_line
        self._line = bytearray(max_line)
        self._lmv = memoryview(self._line)
        self._ll = 0  # bytes of a partial line held in _line
        self._skip = False  # the current line is too long: discard up to its newline

    def reset(self) -> None:
        """Forget any partial line and packet."""
        self._pkt = None
        self._have = 0
        self._ll = 0
        self._skip = False

    def feed(self, data, n=-1) -> list:
        """Take the first `n` bytes of `data` (all if n < 0); return the packets completed.

        `data` is bytes or a bytearray, so a server can reuse one readinto() buffer; a
        memoryview is copied first. Each packet is a new bytearray holding the SMP header
        and payload, CRC removed.
        """
        if type(data) is memoryview:
            data = bytes(data)
        size = len(data)
        if n < 0 or n > size:
            n = size
        packets = []
        mv = None  # made only when a line needs it: short reads then allocate nothing more
        max_line = self._max_line
        pos = 0
        while pos < n:
            nl = data.find(b"\n", pos, n)
            if nl < 0:
                # A partial line: keep it unless it is already too long.
                if not self._skip:
                    ll = self._ll
                    k = n - pos
                    if ll + k >= max_line:
                        self._skip = True
                        self._ll = 0
                    else:
                        if k == size:
                            self._line[ll : ll + k] = data
                        else:
                            if mv is None:
                                mv = memoryview(data)
                            self._line[ll : ll + k] = mv[pos:n]
                        self._ll = ll + k
                break
            if self._skip:
                self._skip = False
            else:
                ll = self._ll
                k = nl - pos
                packet = None
                if ll + k < max_line:
                    if mv is None:
                        mv = memoryview(data)
                    if ll == 0:
                        packet = self._frame(mv, pos, nl)
                    else:
                        self._line[ll : ll + k] = mv[pos:nl]
                        packet = self._frame(self._lmv, 0, ll + k)
                self._ll = 0
                if packet is not None:
                    packets.append(packet)
            pos = nl + 1
        return packets

    def _frame(self, mv, start, stop):
        # One line, newline excluded, in mv[start:stop]; returns a completed packet or None.
        if stop - start < 2:
            return None
        m0 = mv[start]
        if m0 == 6 and mv[start + 1] == 9:
            first = True
            self._have = 0
        elif m0 == 4 and mv[start + 1] == 20 and self._have:
            first = False
        else:
            return None
        if mv[stop - 1] == _CR:
            stop -= 1
        start += 2
        try:
            raw = a2b_base64(mv[start:stop])
        except ValueError:
            self._have = 0
            return None
        k = len(raw)
        # The decoders skip characters outside the alphabet and stop at padding; a line
        # with any of those is longer than the canonical encoding of what came out.
        if stop - start != ((k + 2) // 3) << 2:
            self._have = 0
            return None
        if first:
            if k < 2:
                return None
            want = (raw[0] << 8) | raw[1]
            if want < 2 or want > self._cap or k - 2 > want:
                return None
            pkt = bytearray(want)
            self._pkt = pkt
            k -= 2
            pkt[0:k] = memoryview(raw)[2:]
            have = k
        else:
            pkt = self._pkt
            want = len(pkt)
            have = self._have
            if have + k > want:
                self._have = 0
                return None
            pkt[have : have + k] = raw
            have += k
        if have < want:
            self._have = have
            return None
        self._have = 0
        self._pkt = None
        if crc16_xmodem(pkt) != 0:
            return None
        pkt[want - 2 :] = b""
        return pkt


# ---------------------------------------------------------------------------------------------
# Raw framing

_TICKS_MASK = const((1 << 29) - 1)
_TICKS_HALF = const(1 << 28)


def _ticks_diff(a, b):
    # Wrap-safe difference of millisecond ticks (CircuitPython's ticks wrap at 2**29).
    return ((a - b + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF


def encode_raw(packet):
    """Raw framing adds nothing: the packet itself is returned."""
    return packet


class RawDecoder:
    """Splits raw SMP packets back to back on a serial line, by their header's length field.

    A packet longer than `max_packet` bytes (header included) is skipped, its bytes counted
    off; a header with an unknown op (4..7) means the stream is out of step, so input is
    discarded until the line has been idle for `timeout_ms`. A partial packet is dropped
    when no byte arrived for `timeout_ms`, measured with `clock()`, which returns
    milliseconds (wrap-safe at 2**29, as CircuitPython's supervisor.ticks_ms()).
    Each packet is a new bytearray, its bytes copied once from the input.
    """

    def __init__(self, max_packet=DEFAULT_MAX_PACKET, timeout_ms=3000, clock=None):
        if clock is None:
            raise ValueError("RawDecoder needs a clock returning milliseconds")
        self._hdr = bytearray(HEADER_SIZE)
        self._max = max_packet
        self._timeout = timeout_ms
        self._clock = clock
        self._pkt = None  # the packet being received, once its header is in
        self._have = 0  # bytes received of the header, then of the packet
        self._skip = 0  # bytes still to discard of an oversized packet
        self._lost = False  # out of step: discard until an idle gap
        self._last = 0  # clock() when the last byte arrived

    def reset(self) -> None:
        """Forget any partial packet."""
        self._pkt = None
        self._have = 0
        self._skip = 0
        self._lost = False

    def feed(self, data, n=-1) -> list:
        """Take the first `n` bytes of `data` (all if n < 0); return the packets completed."""
        size = len(data)
        if n < 0 or n > size:
            n = size
        now = self._clock()
        if (self._have or self._skip or self._lost) and _ticks_diff(
            now, self._last
        ) >= self._timeout:
            self.reset()
        if n == 0:
            return []
        self._last = now
        if self._lost:
            return []
        packets = []
        mv = memoryview(data)
        pos = 0
        while pos < n:
            if self._skip:
                k = n - pos
                if k > self._skip:
                    k = self._skip
                self._skip -= k
                pos += k
                continue
            have = self._have
            pkt = self._pkt
            if pkt is None:
                k = HEADER_SIZE - have
                if k > n - pos:
                    k = n - pos
                self._hdr[have : have + k] = mv[pos : pos + k]
                pos += k
                have += k
                self._have = have
                if have < HEADER_SIZE:
                    break
                hdr = self._hdr
                if hdr[0] & 7 > OP_WRITE_RSP:
                    self.reset()
                    self._lost = True
                    break
                total = HEADER_SIZE + ((hdr[2] << 8) | hdr[3])
                if total > self._max:
                    self._have = 0
                    self._skip = total - HEADER_SIZE
                    continue
                pkt = bytearray(total)
                pkt[0:HEADER_SIZE] = hdr
                self._pkt = pkt
            want = len(pkt)
            k = want - have
            if k > n - pos:
                k = n - pos
            pkt[have : have + k] = mv[pos : pos + k]
            pos += k
            have += k
            if have < want:
                self._have = have
                break
            packets.append(pkt)
            self._pkt = None
            self._have = 0
        return packets
