"""CRC-16/XMODEM (poly 0x1021, init 0, no reflection, no final XOR; check 0x31C3).

The SMP console framing checks this CRC on every received packet and the microcontroller has
no CRC-16 in C (only binascii.crc32), so it is written here by hand. A byte-at-a-time table
loop costs some 17 bytecodes a byte, most of the cost of receiving an upload that way, so long
inputs are reduced as one big integer instead, in C by the big-integer code: the CRC is
M(x) * x^16 mod P(x) over GF(2), and P(x) = x^16 + x^12 + x^5 + 1 divides
S(x) = x^577 + x^6 + x^2 + 1, hence every S(x)^(2^k), which is
x^(577 * 2^k) + x^(6 * 2^k) + x^(2 * 2^k) + 1 (squaring is linear over GF(2)), and divides
x^268 + x^26 + x^11 + 1. Each fold by one of them, largest first, halves the number: a few
dozen shifts and XORs whatever the length, then the table multiplies the last 300 or so bits
by x^16. Boards without big integers use the table throughout.
"""

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_POLY = const(0x1021)
_BIG_MIN = const(64)  # bytes: below this the table loop is cheaper


def _make_table():
    # The CRC is linear: the entry for i is the XOR of those for i's bits, so only the 8
    # single-bit entries need the bit loop (a 256 x 8 loop costs a noticeable boot delay).
    table = [0] * 256
    for bit in range(8):
        crc = 0x100 << bit
        for _ in range(8):
            crc = ((crc << 1) ^ _POLY) & 0xFFFF if crc & 0x8000 else crc << 1
        table[1 << bit] = crc
    for i in range(3, 256):
        low = i & -i
        if low != i:
            table[i] = table[i ^ low] ^ table[low]
    return tuple(table)


_TABLE = _make_table()

try:
    # (a, b, c, mask): the multiples x^a + x^b + x^c + 1 of P(x) above, largest first, with
    # 2^a - 1 precomputed where it is small (2.3 KB in all) and made on demand above that.
    _FOLDS = tuple(
        [
            (577 << k, 6 << k, 2 << k, (1 << (577 << k)) - 1 if k < 5 else None)
            for k in range(6, -1, -1)
        ]
        + [(268, 26, 11, (1 << 268) - 1)]
    )
    _HAVE_BIG = True
except OverflowError:  # a build without big integers
    _FOLDS = ()
    _HAVE_BIG = False


def _table_crc(data, crc):
    table = _TABLE
    for b in data:
        crc = ((crc & 0xFF) << 8) ^ table[(crc >> 8) ^ b]
    return crc


def crc16_xmodem(data, crc: int = 0) -> int:
    """CRC of `data` (any buffer of bytes); pass a previous result as `crc` to chain.

    Running it over a packet followed by its big-endian CRC gives 0.
    """
    n = len(data)
    if n < _BIG_MIN or not _HAVE_BIG:
        return _table_crc(data, crc)
    # The CRC is (M(x) + c(x) * x^(8n - 16)) * x^16 mod P for a starting value c: reduce
    # the first factor modulo multiples of P, then let the table multiply by x^16.
    a = int.from_bytes(data, "big")
    if crc:
        a ^= crc << (8 * n - 16)
    bits = 8 * n  # a bound on the length of a, tracked rather than measured
    for deg, b, c, mask in _FOLDS:
        if bits <= deg:
            continue
        if mask is None:
            mask = (1 << deg) - 1
        # One fold takes a from up to 2 deg bits to deg (+ b) bits; the few extra bits
        # are left to the next, half-size, fold. Only a long input folds more than once.
        while bits > 3 * deg:
            high = a >> deg
            a = (a & mask) ^ (high << b) ^ (high << c) ^ high
            bits += b - deg
        high = a >> deg
        a = (a & mask) ^ (high << b) ^ (high << c) ^ high
        bits = bits - deg + b if bits - deg + b > deg else deg
    if bits > 300:
        # The excess the folds left over, folded once more by the last: under 300 bits.
        high = a >> 268
        a = (a & _FOLDS[-1][3]) ^ (high << 26) ^ (high << 11) ^ high
        bits = bits - 242 if bits - 242 > 268 else 268
    # A table pass over the last 300 or so bits is cheaper than more big-integer folds.
    return _table_crc(a.to_bytes((bits + 7) >> 3, "big"), 0)
