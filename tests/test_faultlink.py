"""tools.faultlink, in-process: it forwards, it never stalls on a side that stopped reading,
and it finds a device that went away and came back (a restarted fota-vmcu).

The "device" is a pty this test holds the master of; faultlink opens its slave through a
symlink, as it opens fota-vmcu's ``--link``.  Each test turns faultlink's loop by hand.
"""

from __future__ import annotations

import os
import select
import time
import tty
from collections.abc import Callable
from pathlib import Path

from tools.faultlink import STALL_S, FaultLink, Faults


class FakeDevice:
    """A pty pair; ``link`` (a symlink to the slave) is what faultlink opens."""

    def __init__(self, link: Path) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(os.ttyname(self.slave))

    def read(self, fl: FaultLink, want: int, timeout_s: float = 3.0) -> bytes:
        got = bytearray()
        deadline = time.monotonic() + timeout_s
        while len(got) < want and time.monotonic() < deadline:
            fl.step(0.01)
            if select.select([self.master], [], [], 0)[0]:
                got += os.read(self.master, 4096)
        return bytes(got)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            os.close(fd)


def open_host(fl: FaultLink) -> int:
    fd = os.open(fl.link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


def turn_until(fl: FaultLink, cond: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fl.step(0.01)
        if cond():
            return True
    return False


def test_forwards_both_ways_on_a_clean_line(tmp_path: Path) -> None:
    device = FakeDevice(tmp_path / "dev")
    fl = FaultLink(str(tmp_path / "dev"), str(tmp_path / "host"), Faults(), seed=1)
    host = open_host(fl)
    try:
        os.write(host, b"request\n")
        assert device.read(fl, 8) == b"request\n"
        os.write(device.master, b"reply\n")
        assert turn_until(fl, lambda: bool(select.select([host], [], [], 0)[0]))
        assert os.read(host, 100) == b"reply\n"
        assert (fl.counters.bytes_up, fl.counters.bytes_down) == (8, 6)
    finally:
        os.close(host)
        fl.close()
        device.close()


def test_a_host_that_stops_reading_never_stalls_the_link(tmp_path: Path) -> None:
    """Output for a host that closed its port is dropped after STALL_S, as a UART drops it,
    and the other direction keeps flowing meanwhile (it used to block in write forever)."""
    device = FakeDevice(tmp_path / "dev")
    fl = FaultLink(str(tmp_path / "dev"), str(tmp_path / "host"), Faults(), seed=1)
    host = open_host(fl)
    try:
        blob = bytes(range(256)) * 64
        t0 = time.monotonic()
        for _ in range(40):  # 640 KiB: far more than the pty and the proxy's queue hold
            if select.select([], [device.master], [], 0)[1]:
                os.write(device.master, blob)
            fl.step(0.01)
        assert turn_until(
            fl, lambda: fl.counters.extra.get("lost_host_not_reading", 0) > 0, STALL_S * 3
        )
        assert time.monotonic() - t0 < 30
        os.write(host, b"still alive\n")
        assert device.read(fl, 12).endswith(b"still alive\n")
    finally:
        os.close(host)
        fl.close()
        device.close()


def test_a_device_that_restarts_is_found_again(tmp_path: Path) -> None:
    link = tmp_path / "dev"
    first = FakeDevice(link)
    fl = FaultLink(str(link), str(tmp_path / "host"), Faults(), seed=1)
    host = open_host(fl)
    second = None
    try:
        first.close()  # the device process died: its pty is gone
        assert turn_until(fl, lambda: fl.counters.extra.get("upstream_lost", 0) == 1)
        second = FakeDevice(link)  # started again, on a new pty behind the same link
        assert turn_until(fl, lambda: fl.counters.extra.get("upstream_reopened", 0) == 1)
        os.write(host, b"hello again\n")
        assert second.read(fl, 12) == b"hello again\n"
    finally:
        os.close(host)
        fl.close()
        if second is not None:
            second.close()
