"""A fault-injecting serial link: a pty for the host, forwarding to a device's serial port.

    bridge <-> [pty --link] faultlink [--upstream] <-> fota-vmcu

Each direction independently corrupts bytes (one random bit flipped), drops bytes,
duplicates bytes and delays chunks at the configured rates, and every
``--disconnect-every`` seconds the line goes dead both ways for ``--blackout-ms``
(bytes sent meanwhile are lost), like a cable pulled and put back.  Seeded, so a run
can be repeated.  Counters are printed as JSON on exit (SIGTERM); ``extra`` counts bytes
lost because a side stopped reading (``lost_host_not_reading``, ...) or the device was
gone (``lost_upstream_down``), and device restarts (``upstream_lost``/``upstream_reopened``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import random
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fota_common.cli import EXIT_ERROR, EXIT_OK, OneLineParser, run
from fota_common.errors import BridgeError


@dataclass
class Faults:
    corrupt: float = 0.0  # probability a byte gets one bit flipped
    drop: float = 0.0  # probability a byte is dropped
    duplicate: float = 0.0  # probability a byte is sent twice
    delay_ms: float = 0.0  # extra latency added to each forwarded chunk
    disconnect_every_s: float = 0.0  # 0: never
    blackout_ms: float = 200.0


@dataclass
class Counters:
    bytes_up: int = 0
    bytes_down: int = 0
    corrupted: int = 0
    dropped: int = 0
    duplicated: int = 0
    blackouts: int = 0
    lost_in_blackout: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def mangle(data: bytes, faults: Faults, rng: random.Random, c: Counters) -> bytes:
    """Apply byte faults to one chunk (pure apart from the RNG and the counters)."""
    if not (faults.corrupt or faults.drop or faults.duplicate):
        return data
    out = bytearray()
    for b in data:
        r = rng.random()
        if r < faults.drop:
            c.dropped += 1
            continue
        if r < faults.drop + faults.corrupt:
            b ^= 1 << rng.randrange(8)
            c.corrupted += 1
        out.append(b)
        if rng.random() < faults.duplicate:
            out.append(b)
            c.duplicated += 1
    return bytes(out)


STALL_S = 1.0  # output nobody reads for this long is dropped, as a UART would lose it
REOPEN_EVERY_S = 0.2  # how often a vanished upstream device is looked for again
MAX_PENDING = 1 << 16  # bytes queued for one side before the rest is dropped


class FaultLinkError(BridgeError):
    """A one-line, actionable reason the link cannot start."""


class _Side:
    """One end of the link: its fd and the bytes waiting to be written to it."""

    def __init__(self, fd: int | None, name: str) -> None:
        self.fd = fd
        self.name = name
        self.pending = bytearray()
        self.stalled_since: float | None = None


class FaultLink:
    """The proxy.  Both fds are non-blocking and written through a bounded queue, so a side
    that stops reading (a closed port, a killed device) never stalls the other direction or
    the SIGTERM handling; a device that goes away (its pty closed) is looked for again at
    ``upstream``, like a cable plugged back in, so a restarted ``fota-vmcu`` is reached again.
    """

    def __init__(self, upstream: str, link: str, faults: Faults, seed: int) -> None:
        self.faults = faults
        self.rng = random.Random(seed)
        self.counters = Counters()
        self.stop = False
        self.upstream = upstream
        try:
            self.dev = _Side(self._open_upstream(), "device")
        except OSError as exc:
            raise FaultLinkError(f"cannot open --upstream {upstream}: {exc.strerror}") from exc
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.host = _Side(master, "host")
        self.slave = slave  # kept open: the master never sees a hang-up between host opens
        self.link = Path(link)
        try:
            if self.link.is_symlink() or self.link.exists():
                self.link.unlink()
            self.link.symlink_to(os.ttyname(slave))
        except OSError as exc:
            for fd in (master, slave, self.dev.fd):
                if fd is not None:
                    os.close(fd)
            raise FaultLinkError(f"cannot create --link {link}: {exc.strerror}") from exc
        self.next_blackout = (
            time.monotonic() + faults.disconnect_every_s if faults.disconnect_every_s else None
        )
        self.blackout_until = 0.0
        self.next_reopen = 0.0
        # (due time, side, bytes): chunks held back by --delay-ms, in order.
        self.delayed: list[tuple[float, _Side, bytes]] = []

    def _open_upstream(self) -> int:
        fd = os.open(self.upstream, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(fd)
        except termios.error as exc:
            os.close(fd)
            raise OSError(errno.ENOTTY, "not a serial port: give the device's pty") from exc
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _count(self, key: str, n: int) -> None:
        self.counters.extra[key] = self.counters.extra.get(key, 0) + n

    def _upstream_lost(self) -> None:
        fd, self.dev.fd = self.dev.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
            self._count("upstream_lost", 1)
        self._count("lost_upstream_down", len(self.dev.pending))
        self.dev.pending.clear()
        self.next_reopen = time.monotonic() + REOPEN_EVERY_S

    def _try_reopen(self, now: float) -> None:
        if self.dev.fd is not None or now < self.next_reopen:
            return
        self.next_reopen = now + REOPEN_EVERY_S
        try:
            self.dev.fd = self._open_upstream()
        except OSError:
            return
        self._count("upstream_reopened", 1)

    def _queue(self, side: _Side, data: bytes) -> None:
        if side.fd is None:
            self._count("lost_upstream_down", len(data))
            return
        room = MAX_PENDING - len(side.pending)
        if len(data) > room:
            self._count(f"lost_{side.name}_not_reading", len(data) - max(0, room))
            data = data[: max(0, room)]
        side.pending += data

    def _flush(self, side: _Side, now: float) -> None:
        if side.fd is None or not side.pending:
            side.stalled_since = None
            return
        try:
            n = os.write(side.fd, side.pending)
        except BlockingIOError:
            n = 0
        except OSError:
            if side is self.dev:
                self._upstream_lost()
            else:
                self._count("lost_host_not_reading", len(side.pending))
                side.pending.clear()
            return
        del side.pending[:n]
        if n or not side.pending:
            side.stalled_since = None
        elif side.stalled_since is None:
            side.stalled_since = now
        elif now - side.stalled_since >= STALL_S:
            self._count(f"lost_{side.name}_not_reading", len(side.pending))
            side.pending.clear()
            side.stalled_since = None

    def _forward(self, src: _Side, data: bytes, now: float) -> None:
        up = src is self.host
        if up:
            self.counters.bytes_up += len(data)
        else:
            self.counters.bytes_down += len(data)
        if now < self.blackout_until:
            self.counters.lost_in_blackout += len(data)
            return
        data = mangle(data, self.faults, self.rng, self.counters)
        if not data:
            return
        dst = self.dev if up else self.host
        if self.faults.delay_ms:
            self.delayed.append((now + self.faults.delay_ms / 1000, dst, data))
        else:
            self._queue(dst, data)

    def step(self, timeout_s: float = 0.05) -> None:
        """One turn of the loop: blackout schedule, reads, delayed chunks, writes."""
        now = time.monotonic()
        if self.next_blackout is not None and now >= self.next_blackout:
            self.blackout_until = now + self.faults.blackout_ms / 1000
            self.next_blackout = now + self.faults.disconnect_every_s
            self.counters.blackouts += 1
        self._try_reopen(now)
        sides = [s for s in (self.host, self.dev) if s.fd is not None]
        readers = [s.fd for s in sides if s.fd is not None]
        writers = [s.fd for s in sides if s.fd is not None and s.pending]
        if self.delayed:
            timeout_s = max(0.0, min(timeout_s, self.delayed[0][0] - now))
        if self.dev.fd is None:
            timeout_s = min(timeout_s, REOPEN_EVERY_S)
        ready, _, _ = select.select(readers, writers, [], timeout_s)
        now = time.monotonic()
        for side in sides:
            if side.fd is None or side.fd not in ready:
                continue
            try:
                data = os.read(side.fd, 4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""  # EIO: the other end of this pty is gone
            if not data:
                if side is self.dev:
                    self._upstream_lost()
                continue
            self._forward(side, data, now)
        while self.delayed and self.delayed[0][0] <= now:
            _due, dst, data = self.delayed.pop(0)
            self._queue(dst, data)
        for side in (self.dev, self.host):
            self._flush(side, now)

    def run(self) -> None:
        try:
            while not self.stop:
                self.step()
        finally:
            self.close()

    def close(self) -> None:
        try:
            if self.link.is_symlink():
                self.link.unlink()
        except OSError:
            pass
        for fd in (self.host.fd, self.slave, self.dev.fd):
            if fd is None:
                continue
            with contextlib.suppress(OSError):
                os.close(fd)


def _number(high: float | None) -> Callable[[str], float]:
    """An argparse type: a finite number from 0 to ``high`` (None: no upper bound)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (high is not None and value > high):
            span = f"from 0 to {high:g}" if high is not None else "of at least 0"
            raise argparse.ArgumentTypeError(f"must be a number {span}, not {text!r}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    rate, amount = _number(1.0), _number(None)
    ap = OneLineParser(prog="faultlink", description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="the device's serial port (a pty path)")
    ap.add_argument("--link", required=True, help="symlink for the host's side")
    ap.add_argument("--corrupt", type=rate, default=0.0, help="byte corruption rate (0..1)")
    ap.add_argument("--drop", type=rate, default=0.0, help="byte drop rate (0..1)")
    ap.add_argument("--duplicate", type=rate, default=0.0, help="byte duplication rate (0..1)")
    ap.add_argument("--delay-ms", type=amount, default=0.0)
    ap.add_argument("--disconnect-every", type=amount, default=0.0, metavar="S")
    ap.add_argument("--blackout-ms", type=amount, default=200.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    faults = Faults(
        args.corrupt,
        args.drop,
        args.duplicate,
        args.delay_ms,
        args.disconnect_every,
        args.blackout_ms,
    )
    made: list[FaultLink] = []

    def start() -> int:
        made.append(FaultLink(args.upstream, args.link, faults, args.seed))
        return EXIT_OK

    code = run("faultlink", start, also=(OSError,))
    if not made:
        return code or EXIT_ERROR
    fl = made[0]

    def on_term(signum: int, frame: object) -> None:
        fl.stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print("faultlink: ready", file=sys.stderr, flush=True)

    def serve() -> int:
        fl.run()
        print(json.dumps(asdict(fl.counters)), flush=True)
        return EXIT_OK

    return run("faultlink", serve)


if __name__ == "__main__":
    sys.exit(main())
