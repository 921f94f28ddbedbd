"""CRC-16/XMODEM (poly 0x1021, init 0, no reflection, no final XOR; check 0x31C3).

The SMP console framing checks this CRC on every received packet, and the microcontroller has
no CRC-16 in C (only binascii.crc32), so it is written here by hand. A byte-at-a-time table
loop costs some 17 bytecodes a byte, which made the CRC most of the cost of receiving an
upload. Long inputs are therefore reduced as one big integer instead: the CRC is
M(x) * x^16 mod P(x) over GF(2), and P divides the sparse polynomial
S(x) = x^577 + x^6 + x^2 + 1 and every S(x)^(2^k) = x^(577*2^k) + x^(6*2^k) + x^(2*2^k) + 1
(squaring is linear over GF(2)), and x^103 + x^27 + x + 1. Folding the message modulo those,
largest first, takes a few dozen shifts and XORs done in C by the big-integer code, whatever
the length; the last 100 or so bits go through the table. Boards without big integers use
the table loop throughout.
"""

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_POLY = const(0x1021)
_BIG_MIN = const(48)  # bytes: below this the table loop is cheaper


def _make_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ _POLY) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()

# (a, b, c): multiples x^a + x^b + x^c + 1 of P(x) = x^16 + x^12 + x^5 + 1, largest first;
# x^103 + x^27 + x + 1 finishes.
_FOLDS = tuple([(577 << k, 6 << k, 2 << k) for k in range(6, -1, -1)])

try:
    _HAVE_BIG = (1 << 200) >> 199 == 2
except OverflowError:
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
    bits = 8 * n  # an upper bound of the bit length of a, tracked instead of measured
    for deg, b, c in _FOLDS:
        while bits > deg:
            high = a >> deg
            a = (a & _mask(deg)) ^ (high << b) ^ (high << c) ^ high
            # high has bits - deg bits; shifted by b it is the longest part unless low is.
            bits = bits - deg + b if bits - deg + b > deg else deg
    while bits > 103:
        high = a >> 103
        a = (a & 0x7FFFFFFFFFFFFFFFFFFFFFFFFF) ^ (high << 27) ^ (high << 1) ^ high
        bits = bits - 76 if bits - 76 > 103 else 103
    return _table_crc(a.to_bytes(13, "big"), 0)
