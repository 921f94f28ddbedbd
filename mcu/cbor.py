"""Minimal CBOR (RFC 8949) for SMP payloads, for the microcontroller and the host alike.

Written by hand because it runs on the microcontroller, where cbor2 is not available; the same
file is imported by host code and tests, which check it against cbor2.

Decoding accepts unsigned and negative integers up to 64 bits, byte and text strings (definite
or chunked), arrays and maps (definite or indefinite, as Zephyr's zcbor emits), false, true,
null and half/single/double floats. Tags, undefined and other simple values are rejected.
Encoding writes dict, list, tuple, int, bytes, bytearray, memoryview, str, bool and None, in
the shortest head form; maps in the dict's iteration order (insertion order on CPython; use
collections.OrderedDict on MicroPython/CircuitPython, whose plain dicts do not keep it).

Every failure on untrusted input is a CborError, a ValueError: never an IndexError, a
RecursionError, or a MemoryError from a length claim (lengths are checked against the buffer
before anything is allocated).
"""

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_BREAK = const(0xFF)

DEFAULT_MAX_DEPTH = const(8)
DEFAULT_MAX_ITEMS = const(128)


class CborError(ValueError):
    """Malformed, truncated, oversized or unsupported CBOR, or a value that cannot be encoded."""


# ---------------------------------------------------------------------------------------------
# Decoding


def decode(
    buf,
    start=0,
    end=None,
    max_depth=DEFAULT_MAX_DEPTH,
    max_items=DEFAULT_MAX_ITEMS,
    bytes_view=False,
):
    """Decode the single data item that fills buf[start:end] exactly.

    An SMP server passes the packet with start=8 and end=8 + header length, so the payload is
    never sliced. `max_depth` bounds container nesting (1 = a map of scalars), `max_items` the
    number of data items (keys, values and elements all count).

    Byte strings come back as bytes, copied once from `buf`; with bytes_view=True they are
    memoryview slices of `buf` instead (no copy; valid while `buf` is unchanged), which is
    what an upload handler wants for its 2 KiB `data`. Map keys are always hashable values.
    """
    value, pos = decode_prefix(buf, start, end, max_depth, max_items, bytes_view)
    if end is None:
        end = len(buf)
    if pos != end:
        raise CborError("%d trailing bytes" % (end - pos))
    return value


def decode_prefix(
    buf,
    start=0,
    end=None,
    max_depth=DEFAULT_MAX_DEPTH,
    max_items=DEFAULT_MAX_ITEMS,
    bytes_view=False,
):
    """Decode the data item starting at buf[start]; return (value, offset just past it).

    Same limits and byte-string handling as decode(); bytes past the item are not looked at.
    """
    try:
        mv = memoryview(buf)
    except TypeError:
        raise CborError("not a buffer")
    n = len(mv)
    if end is None:
        end = n
    if start < 0 or end > n or start > end:
        raise CborError("bad range %d:%d of %d bytes" % (start, end, n))
    state = [max_items, max_depth, bytes_view]
    try:
        return _item(mv, start, end, 0, state)
    except RuntimeError:
        # Only reachable with a max_depth beyond the interpreter's recursion limit
        # (CPython's RecursionError and MicroPython's are both RuntimeErrors).
        raise CborError("nesting too deep for this interpreter")


def _item(mv, pos, end, depth, state):
    # state = [items left, max depth, bytes_view]; returns (value, next pos)
    state[0] -= 1
    if state[0] < 0:
        raise CborError("too many items")
    if pos >= end:
        raise CborError("truncated")
    ib = mv[pos]
    pos += 1
    major = ib >> 5
    ai = ib & 0x1F
    if major == 7:
        return _simple(mv, pos, end, ai)
    # The argument: a count, a length or the integer itself.
    if ai < 24:
        arg = ai
    elif ai == 24:
        if pos + 1 > end:
            raise CborError("truncated")
        arg = mv[pos]
        pos += 1
    elif ai == 25:
        if pos + 2 > end:
            raise CborError("truncated")
        arg = (mv[pos] << 8) | mv[pos + 1]
        pos += 2
    elif ai == 26:
        if pos + 4 > end:
            raise CborError("truncated")
        arg = struct.unpack_from(">I", mv, pos)[0]
        pos += 4
    elif ai == 27:
        if pos + 8 > end:
            raise CborError("truncated")
        arg = struct.unpack_from(">Q", mv, pos)[0]
        pos += 8
    elif ai == 31 and 2 <= major <= 5:
        return _indefinite(mv, pos, end, depth, state, major)
    else:
        raise CborError("bad additional info %d for major type %d" % (ai, major))

    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major == 2 or major == 3:
        if arg > end - pos:
            raise CborError("truncated string")
        stop = pos + arg
        if major == 2:
            if state[2]:
                return mv[pos:stop], stop
            return bytes(mv[pos:stop]), stop
        return _text(mv[pos:stop]), stop
    if major == 6:
        raise CborError("tags are not supported")
    if depth >= state[1]:
        raise CborError("nesting deeper than %d" % state[1])
    depth += 1
    if major == 4:
        # Every element takes at least one byte: a count beyond that is a lie.
        if arg > end - pos:
            raise CborError("truncated array")
        out = []
        for _ in range(arg):
            value, pos = _item(mv, pos, end, depth, state)
            out.append(value)
        return out, pos
    # major == 5
    if arg > (end - pos) >> 1:
        raise CborError("truncated map")
    out = {}
    for _ in range(arg):
        pos = _map_entry(mv, pos, end, depth, state, out)
    return out, pos


def _indefinite(mv, pos, end, depth, state, major):
    if major == 2 or major == 3:
        # Chunks are definite strings of the same major type, each valid on its own.
        chunks = []
        while True:
            if pos >= end:
                raise CborError("truncated")
            ib = mv[pos]
            if ib == _BREAK:
                pos += 1
                break
            if ib >> 5 != major or (ib & 0x1F) == 31:
                raise CborError("bad chunk in indefinite string")
            chunk, pos = _item(mv, pos, end, depth, state)
            chunks.append(chunk if major == 3 else bytes(chunk))
        if major == 3:
            return "".join(chunks), pos
        joined = b"".join(chunks)
        return (memoryview(joined) if state[2] else joined), pos
    if depth >= state[1]:
        raise CborError("nesting deeper than %d" % state[1])
    depth += 1
    if major == 4:
        out = []
        while True:
            if pos >= end:
                raise CborError("truncated")
            if mv[pos] == _BREAK:
                return out, pos + 1
            value, pos = _item(mv, pos, end, depth, state)
            out.append(value)
    out = {}
    while True:
        if pos >= end:
            raise CborError("truncated")
        if mv[pos] == _BREAK:
            return out, pos + 1
        pos = _map_entry(mv, pos, end, depth, state, out)


def _map_entry(mv, pos, end, depth, state, out):
    key, pos = _item(mv, pos, end, depth, state)
    kt = type(key)
    if kt is memoryview:
        key = bytes(key)
    elif kt is list or kt is dict:
        raise CborError("unhashable map key")
    if key in out:
        raise CborError("duplicate map key")
    value, pos = _item(mv, pos, end, depth, state)
    out[key] = value
    return pos


def _text(raw):
    try:
        return str(raw, "utf-8")
    except (UnicodeError, ValueError):
        raise CborError("invalid UTF-8")


def _simple(mv, pos, end, ai):
    if ai == 20:
        return False, pos
    if ai == 21:
        return True, pos
    if ai == 22:
        return None, pos
    if ai == 25:
        if pos + 2 > end:
            raise CborError("truncated")
        return _half((mv[pos] << 8) | mv[pos + 1]), pos + 2
    if ai == 26:
        if pos + 4 > end:
            raise CborError("truncated")
        return struct.unpack_from(">f", mv, pos)[0], pos + 4
    if ai == 27:
        if pos + 8 > end:
            raise CborError("truncated")
        return struct.unpack_from(">d", mv, pos)[0], pos + 8
    if ai == 31:
        raise CborError("unexpected break")
    raise CborError("unsupported simple value %d" % ai)


def _half(h):
    # By hand: struct's "e" format is missing from some MicroPython/CircuitPython builds.
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        value = mant * 2.0**-24
    elif exp == 31:
        value = float("nan") if mant else float("inf")
    else:
        value = (mant + 1024) * 2.0 ** (exp - 25)
    return -value if h & 0x8000 else value


# ---------------------------------------------------------------------------------------------
# Encoding


def encode(value) -> bytes:
    """The CBOR encoding of `value` (see the module docstring for the accepted types)."""
    out = bytearray()
    _encode(out, value, 0)
    return bytes(out)


def encode_into(out, value) -> None:
    """Append the encoding of `value` to the bytearray `out` (e.g. after an SMP header)."""
    _encode(out, value, 0)


def _head(out, major, n):
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.extend(struct.pack(">H", n))
    elif n >> 32 == 0:  # shifts, not literals past 2^30: some builds lack big integers
        out.append(mt | 26)
        out.extend(struct.pack(">I", n))
    elif n >> 64 == 0:
        out.append(mt | 27)
        out.extend(struct.pack(">Q", n))
    else:
        raise CborError("integer out of the 64-bit range")


def _encode(out, value, depth):
    if depth > 64:
        raise CborError("nesting too deep to encode")
    # True/False first: on CPython bool is an int.
    if value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, int):
        if value >= 0:
            _head(out, 0, value)
        else:
            _head(out, 1, -1 - value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        _head(out, 3, len(raw))
        out.extend(raw)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        _head(out, 2, len(value))
        out.extend(value)
    elif isinstance(value, dict):
        _head(out, 5, len(value))
        for key, element in value.items():
            _encode(out, key, depth + 1)
            _encode(out, element, depth + 1)
    elif isinstance(value, (list, tuple)):
        _head(out, 4, len(value))
        for element in value:
            _encode(out, element, depth + 1)
    else:
        raise CborError("cannot encode %s" % type(value).__name__)
