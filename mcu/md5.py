# MD5 (RFC 1321) in plain Python, for the MCU ports whose hashlib has no md5
# (CircuitPython's offers sha1/sha256 only; MicroPython's often sha256 only).  The seed's
# job documents carry the firmware's MD5 (bc_crc), so the device must compute it.
# Incremental, hashlib-style: MD5(data).update(more).digest() / .hexdigest().
#
# new() returns the platform's C implementation when there is one.

import struct

# T[i] = floor(abs(sin(i + 1)) * 2**32), written out: some ports have single-precision floats.
_K = (
    0xD76AA478,
    0xE8C7B756,
    0x242070DB,
    0xC1BDCEEE,
    0xF57C0FAF,
    0x4787C62A,
    0xA8304613,
    0xFD469501,
    0x698098D8,
    0x8B44F7AF,
    0xFFFF5BB1,
    0x895CD7BE,
    0x6B901122,
    0xFD987193,
    0xA679438E,
    0x49B40821,
    0xF61E2562,
    0xC040B340,
    0x265E5A51,
    0xE9B6C7AA,
    0xD62F105D,
    0x02441453,
    0xD8A1E681,
    0xE7D3FBC8,
    0x21E1CDE6,
    0xC33707D6,
    0xF4D50D87,
    0x455A14ED,
    0xA9E3E905,
    0xFCEFA3F8,
    0x676F02D9,
    0x8D2A4C8A,
    0xFFFA3942,
    0x8771F681,
    0x6D9D6122,
    0xFDE5380C,
    0xA4BEEA44,
    0x4BDECFA9,
    0xF6BB4B60,
    0xBEBFBC70,
    0x289B7EC6,
    0xEAA127FA,
    0xD4EF3085,
    0x04881D05,
    0xD9D4D039,
    0xE6DB99E5,
    0x1FA27CF8,
    0xC4AC5665,
    0xF4292244,
    0x432AFF97,
    0xAB9423A7,
    0xFC93A039,
    0x655B59C3,
    0x8F0CCC92,
    0xFFEFF47D,
    0x85845DD1,
    0x6FA87E4F,
    0xFE2CE6E0,
    0xA3014314,
    0x4E0811A1,
    0xF7537E82,
    0xBD3AF235,
    0x2AD7D2BB,
    0xEB86D391,
)
_S = (7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21)


# The 32-bit arithmetic is done on 16-bit halves: every value stays a small int, so a
# board's MicroPython allocates nothing per step (31-bit small ints; a 32-bit value would be
# a heap-allocated long on every operation).
_KH = tuple(k >> 16 for k in _K)
_KL = tuple(k & 0xFFFF for k in _K)
_LOW = tuple(0xFFFF >> s for s in range(16))  # the bits of a half that survive a shift by s


class MD5:
    digest_size = 16
    block_size = 64

    def __init__(self, data=b""):
        # (high, low) halves of A, B, C, D
        self._h = [0x6745, 0x2301, 0xEFCD, 0xAB89, 0x98BA, 0xDCFE, 0x1032, 0x5476]
        self._buf = bytearray()
        self._count = 0
        if data:
            self.update(data)

    def _block(self, block):
        w = struct.unpack("<32H", block)  # word i is (w[2i + 1] << 16) | w[2i]
        ah, al, bh, bl, ch, cl, dh, dl = self._h
        kh = _KH
        kl = _KL
        low = _LOW
        for i in range(64):
            r = i >> 4
            if r == 0:
                fh = (bh & ch) | (~bh & dh)
                fl = (bl & cl) | (~bl & dl)
                g = i
            elif r == 1:
                fh = (dh & bh) | (~dh & ch)
                fl = (dl & bl) | (~dl & cl)
                g = (5 * i + 1) & 15
            elif r == 2:
                fh = bh ^ ch ^ dh
                fl = bl ^ cl ^ dl
                g = (3 * i + 5) & 15
            else:
                fh = ch ^ (bh | (~dh & 0xFFFF))
                fl = cl ^ (bl | (~dl & 0xFFFF))
                g = (7 * i) & 15
            tl = al + fl + kl[i] + w[2 * g]
            th = (ah + fh + kh[i] + w[2 * g + 1] + (tl >> 16)) & 0xFFFF
            tl &= 0xFFFF
            s = _S[(r << 2) | (i & 3)]
            if s >= 16:
                th, tl = tl, th
                s -= 16
            if s:
                th, tl = (
                    ((th & low[s]) << s) | (tl >> (16 - s)),
                    ((tl & low[s]) << s) | (th >> (16 - s)),
                )
            tl += bl
            th = (th + bh + (tl >> 16)) & 0xFFFF
            tl &= 0xFFFF
            ah, dh, ch = dh, ch, bh
            al, dl, cl = dl, cl, bl
            bh, bl = th, tl
        h = self._h
        for j, v in ((0, ah), (1, al), (2, bh), (3, bl), (4, ch), (5, cl), (6, dh), (7, dl)):
            h[j] += v
        for j in (1, 3, 5, 7):  # carry each low half into its high half
            h[j - 1] += h[j] >> 16
            h[j] &= 0xFFFF
            h[j - 1] &= 0xFFFF

    def update(self, data):
        self._count += len(data)
        buf = self._buf
        mv = memoryview(data)
        pos = 0
        if buf:
            take = 64 - len(buf)
            buf.extend(mv[:take])
            pos = take
            if len(buf) < 64:
                return
            self._block(bytes(buf))
            buf = self._buf = bytearray()
        end = len(mv)
        while pos + 64 <= end:
            self._block(bytes(mv[pos : pos + 64]))
            pos += 64
        if pos < end:
            buf.extend(mv[pos:])

    def copy(self):
        other = MD5()
        other._h = list(self._h)
        other._buf = bytearray(self._buf)
        other._count = self._count
        return other

    def digest(self):
        tmp = self.copy()
        bits = (self._count * 8) & 0xFFFFFFFFFFFFFFFF
        pad = (55 - self._count) % 64
        tmp.update(b"\x80" + bytes(pad) + struct.pack("<Q", bits))
        h = tmp._h
        return struct.pack("<8H", h[1], h[0], h[3], h[2], h[5], h[4], h[7], h[6])

    def hexdigest(self):
        return "".join("%02x" % b for b in self.digest())


def new(data=b""):
    """An MD5 object: hashlib's when the port has one, else the one above."""
    try:
        import hashlib  # optional: ports without hashlib.md5 use the code above

        if hasattr(hashlib, "md5"):
            return hashlib.md5(data)
        if hasattr(hashlib, "new"):
            return hashlib.new("md5", data)
    except Exception:  # no module, or an algorithm the port does not offer
        pass
    return MD5(data)
