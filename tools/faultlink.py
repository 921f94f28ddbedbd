"""A fault-injecting serial link: a pty for the host, forwarding to a device's serial port.

    bridge <-> [pty --link] faultlink [--upstream] <-> fota-vmcu

Each direction independently corrupts bytes (one random bit flipped), drops bytes,
duplicates bytes and delays chunks at the configured rates, and every
``--disconnect-every`` seconds the line goes dead both ways for ``--blackout-ms``
(bytes sent meanwhile are lost), like a cable pulled and put back.  Seeded, so a run
can be repeated.  Counters are printed as JSON on exit (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import sys
import time
import tty
from dataclasses import asdict, dataclass, field
from pathlib import Path


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


class FaultLink:
    def __init__(self, upstream: str, link: str, faults: Faults, seed: int) -> None:
        self.faults = faults
        self.rng = random.Random(seed)
        self.counters = Counters()
        self.stop = False
        self.dev = os.open(upstream, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.dev)
        master, slave = os.openpty()
        tty.setraw(slave)
        self.master, self.slave = master, slave
        self.link = Path(link)
        if self.link.is_symlink() or self.link.exists():
            self.link.unlink()
        self.link.symlink_to(os.ttyname(slave))
        self.next_blackout = (
            time.monotonic() + faults.disconnect_every_s if faults.disconnect_every_s else None
        )
        self.blackout_until = 0.0

    def run(self) -> None:
        try:
            while not self.stop:
                now = time.monotonic()
                if self.next_blackout is not None and now >= self.next_blackout:
                    self.blackout_until = now + self.faults.blackout_ms / 1000
                    self.next_blackout = now + self.faults.disconnect_every_s
                    self.counters.blackouts += 1
                ready, _, _ = select.select([self.master, self.dev], [], [], 0.05)
                for fd in ready:
                    try:
                        data = os.read(fd, 4096)
                    except OSError:
                        continue
                    if not data:
                        continue
                    up = fd == self.master
                    if up:
                        self.counters.bytes_up += len(data)
                    else:
                        self.counters.bytes_down += len(data)
                    if time.monotonic() < self.blackout_until:
                        self.counters.lost_in_blackout += len(data)
                        continue
                    data = mangle(data, self.faults, self.rng, self.counters)
                    if self.faults.delay_ms:
                        time.sleep(self.faults.delay_ms / 1000)
                    if data:
                        os.write(self.dev if up else self.master, data)
        finally:
            self.close()

    def close(self) -> None:
        try:
            if self.link.is_symlink():
                self.link.unlink()
        except OSError:
            pass
        for fd in (self.master, self.slave, self.dev):
            try:
                os.close(fd)
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="faultlink", description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="the device's serial port (a pty path)")
    ap.add_argument("--link", required=True, help="symlink for the host's side")
    ap.add_argument("--corrupt", type=float, default=0.0, help="byte corruption rate")
    ap.add_argument("--drop", type=float, default=0.0, help="byte drop rate")
    ap.add_argument("--duplicate", type=float, default=0.0, help="byte duplication rate")
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--disconnect-every", type=float, default=0.0, metavar="S")
    ap.add_argument("--blackout-ms", type=float, default=200.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    faults = Faults(args.corrupt, args.drop, args.duplicate, args.delay_ms,
                    args.disconnect_every, args.blackout_ms)
    try:
        fl = FaultLink(args.upstream, args.link, faults, args.seed)
    except OSError as exc:
        print(f"faultlink: error: {exc}", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: object) -> None:
        fl.stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print("faultlink: ready", file=sys.stderr, flush=True)
    fl.run()
    print(json.dumps(asdict(fl.counters)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
