"""``fota-vmcu``: a virtual MCU on a pseudo-terminal.

It boots through the MCUboot model, then runs the MCU receiver (the same ``mcu/`` code a
board runs) as its application, on a pty whose slave is symlinked at ``--link``.  An SMP
reset reboots it; flash persists in ``--flash``; ``--baud`` paces both directions like
a UART (bytes/s = baud/10).  What the "firmware" does after a boot comes from its image:
a payload starting with ``#vmcu:{"on_boot": "confirm"|"stay-unconfirmed"|"crash"}\\n``;
anything else behaves as ``confirm``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import signal
import sys
import termios
import time
import tty
from pathlib import Path
from typing import Any

from bootloader.formats.layout import Layout, load_board
from bootloader.sim.cli import load_keys
from bootloader.sim.cli import read_file as _read_file
from bootloader.sim.flash import Flash
from bootloader.sim.model.boot import BootedImage, boot
from fota_common.cli import EXIT_ERROR, OneLineParser, int_at_least, internal_error, run
from fota_common.errors import ConfigError
from mcu import bootutil
from mcu.receiver import Receiver, make_server

BEHAVIOURS = ("confirm", "stay-unconfirmed", "crash")
CRASH_DELAY_S = 0.3  # a watchdog bites this long after a crashing image boots
TX_STALL_S = 1.0  # output nobody reads for this long is dropped, as a UART would lose it


class Reboot(Exception):  # a control-flow signal, not an error
    """Raised inside the run loop to reset the virtual MCU."""


class PacedPort:
    """The device side of the pty, paced like a UART at ``baud`` (None: unthrottled)."""

    def __init__(self, fd: int, baud: int | None) -> None:
        self.fd = fd
        self.rate = baud / 10 if baud else None
        self._rx_t = time.monotonic()
        self._tx_t = time.monotonic()
        self.dropped = 0  # output bytes lost because nobody read them
        self._stalled = False

    def _pace(self, n: int, t: float) -> float:
        assert self.rate is not None
        now = time.monotonic()
        start = max(t, now)
        end = start + n / self.rate
        if end - now > 0.002:
            time.sleep(end - now)
        return end

    def read(self, n: int, timeout: float = 0.05) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return b""
        if self.rate is not None:
            n = max(1, min(n, int(self.rate * 0.02)))  # ~20 ms worth at a time
        try:
            data = os.read(self.fd, n)
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EAGAIN):
                return b""
            raise
        if self.rate is not None and data:
            self._rx_t = self._pace(len(data), self._rx_t)
        return data

    def write(self, data: bytes) -> None:
        """Send ``data``; what the host has not taken within TX_STALL_S is dropped.

        A UART without flow control never waits for its receiver. Here the pty's buffer
        fills when the host stops reading (e.g. it closed the port mid-request), and
        waiting for it would hang the MCU, and its SIGTERM handling, forever.  Once output
        has stalled, further output is dropped at once until the host reads again.
        """
        view = memoryview(data)
        deadline = time.monotonic() + (0.0 if self._stalled else TX_STALL_S)
        while view:
            left = deadline - time.monotonic()
            _, ready, _ = select.select([], [self.fd], [], max(0.0, left))
            if not ready:
                self.dropped += len(view)
                self._stalled = True
                return
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                if left <= 0:
                    self.dropped += len(view)
                    self._stalled = True
                    return
                continue
            self._stalled = False
            if self.rate is not None:
                self._tx_t = self._pace(n, self._tx_t)
            view = view[n:]

    def drain_input(self) -> None:
        termios.tcflush(self.fd, termios.TCIFLUSH)


def behaviour(flash: Flash, layout: Layout, booted: BootedImage) -> str:
    """The virtual firmware's on-boot behaviour, read from its payload."""
    start = layout.slot0.offset + booted.payload_offset
    head = flash.read(start, min(256, booted.payload_size))
    if not head.startswith(b"#vmcu:"):
        return "confirm"
    line = head[6:].split(b"\n", 1)[0]
    try:
        doc = json.loads(line)
        value = str(doc.get("on_boot", "confirm"))
    except (ValueError, AttributeError):
        return "confirm"
    return value if value in BEHAVIOURS else "confirm"


class VirtualMcu:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.layout = load_board(args.board)
        self.keys: list[Any] = load_keys(args.key or [])
        self.flash = Flash.for_layout(self.layout, args.flash)
        self.stop = False
        self.boots = 0
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)  # a write must never wait on a host that stopped reading
        self.master, self.slave = master, slave  # keeping the slave open avoids EIO
        self.link = Path(args.link)
        slave_name = os.ttyname(slave)
        try:
            if self.link.is_symlink() or self.link.exists():
                self.link.unlink()
            self.link.symlink_to(slave_name)
        except OSError as exc:
            for fd in (master, slave):
                os.close(fd)
            self.flash.close()
            raise OSError(f"cannot create the link {self.link}: {exc.strerror}") from exc
        self.slave_name = slave_name
        self.port = PacedPort(master, args.baud)

    def log(self, msg: str) -> None:
        print(f"vmcu: {msg}", file=sys.stderr, flush=True)

    def reset(self) -> None:
        raise Reboot()

    def run(self) -> int:
        self.log(f"board {self.layout.name}, flash {self.args.flash}, port {self.link}")
        try:
            while not self.stop:
                try:
                    self.boot_and_serve()
                except Reboot:
                    self.log("reset")
                    time.sleep(0.05)
                    self.port.drain_input()
        finally:
            self.close()
        return 0

    def boot_and_serve(self) -> None:
        self.boots += 1
        result = boot(self.flash, self.layout, self.keys)
        for line in result.log:
            self.log(f"mcuboot: {line}")
        if result.booted is None:
            self.log(f"boot {self.boots}: PANIC: {result.panic}; halted")
            while not self.stop:
                time.sleep(0.1)
            return
        b = result.booted
        self.log(
            f"boot {self.boots}: swap type {result.swap_type}, running version {b.version} "
            f"({'confirmed' if b.confirmed else 'unconfirmed'}) hash {b.hash[:16]}"
        )
        primary = self.flash.area(self.layout.slot0)
        secondary = self.flash.area(self.layout.slot1)
        what = behaviour(self.flash, self.layout, b)
        crash_at = None
        if what == "confirm" and not b.confirmed:
            bootutil.confirm(primary, self.layout.max_align)
            self.log("firmware confirmed itself")
        elif what == "crash" and not b.confirmed:
            crash_at = time.monotonic() + CRASH_DELAY_S
        elif what == "stay-unconfirmed" and not b.confirmed:
            self.log("firmware did not confirm itself")
        server = make_server(
            primary,
            secondary,
            self.reset,
            self.layout.max_align,
            self.layout.trailer_size(),
            self.layout.mode,
            self.args.buf_size,
            self.args.buf_count,
        )
        receiver = Receiver(
            self.port, server, self.args.framing, lambda: int(time.monotonic() * 1000)
        )
        while not self.stop:
            if crash_at is not None and time.monotonic() >= crash_at:
                self.log("firmware crashed before confirming (watchdog reset)")
                raise Reboot()
            receiver.poll()
            if self.port.dropped:
                self.log(f"tx: {self.port.dropped} bytes dropped (nobody reading)")
                self.port.dropped = 0

    def close(self) -> None:
        try:
            # Only our own link: a newer device may already have taken over this path.
            if self.link.is_symlink() and os.readlink(self.link) == self.slave_name:
                self.link.unlink()
        except OSError:
            pass
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.flash.close()


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="fota-vmcu",
        description="A virtual MCU: MCUboot model + the mcu/ SMP receiver on a pseudo-terminal.",
        epilog="Example: fota-vmcu --board nrf52840 --flash dev.bin --link /tmp/ttyVMCU0 & "
        "smpmgr --port /tmp/ttyVMCU0 image state-read",
    )
    p.add_argument("--board", required=True, help="board name or layout .toml")
    p.add_argument("--flash", required=True, help="flash file (created erased if missing)")
    p.add_argument("--link", required=True, help="symlink to create for the pty slave")
    p.add_argument("--baud", type=int_at_least(1), default=None, help="pace the line like a UART")
    p.add_argument("--framing", choices=("console", "raw"), default="console")
    p.add_argument(
        "--buf-size", type=int_at_least(1), default=2048, help="SMP buffer size (mcumgr params)"
    )
    p.add_argument(
        "--buf-count", type=int_at_least(1), default=4, help="SMP buffers (the receive window)"
    )
    p.add_argument("--key", action="append", help="trusted key: MCUboot requires signatures")
    p.add_argument("--load", metavar="IMAGE", help="program IMAGE into the primary slot first")
    return p


def _start(args: argparse.Namespace) -> VirtualMcu:
    """The virtual MCU, with ``--load`` programmed; nothing is left open when this fails."""
    image = _read_file(args.load, "image") if args.load else None
    vm = VirtualMcu(args)
    if image is None:
        return vm
    try:
        lay = vm.layout
        limit = lay.slot0.size - lay.trailer_sectors() * lay.sector_size
        if len(image) > limit:
            raise ConfigError(
                f"image {args.load} is {len(image)} bytes but {lay.slot0.name} of board "
                f"{lay.name} holds at most {limit}"
            )
        area = vm.flash.area(lay.slot0)
        area.erase(0, area.size)
        pad = bytes([lay.erased_val]) * (-len(image) % lay.write_size)
        area.write(0, image + pad)
    except BaseException:
        vm.close()
        raise
    return vm


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started: list[VirtualMcu] = []

    def start() -> int:
        started.append(_start(args))
        return 0

    # A link or flash file that cannot be made is an OSError; a bad image a ValueError.
    code = run("fota-vmcu", start, also=(OSError, ValueError))
    if not started:
        return code or EXIT_ERROR
    vm = started[0]

    def on_term(signum: int, frame: object) -> None:
        vm.stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        return vm.run()
    except Exception as exc:
        return internal_error("fota-vmcu", exc)


if __name__ == "__main__":
    sys.exit(main())
