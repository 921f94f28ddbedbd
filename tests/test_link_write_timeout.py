"""Serial writes cannot hang: a port that stops taking data is a link error, in time.

Ports are pyserial's, opened by ``open_serial`` (every serial port the bridge opens goes
through it). Here they are faked behind pyserial's own entry point, ``serial_for_url``,
on a simulated clock; and one real pseudo-terminal, whose other side never reads, fills
up for real.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Final

import pytest
import serial
from smp import os_management as smpos

from fota_common.errors import LinkError
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink, open_serial
from mcu.os_mgmt import OsGroup
from mcu.receiver import Receiver
from mcu.smp_server import SmpServer

pytestmark = pytest.mark.timeout(60)

URL: Final = "/dev/ttyFAKE0"
TX_BUFFER: Final = 4096  # a UART driver's transmit buffer


class Hang(BaseException):
    """What pyserial does with no write timeout on a port that stopped draining: wait
    forever. A BaseException, so that no ``except Exception`` can mistake it for an error."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeUart:
    """``serial.Serial`` as ``serial_for_url(url, **kwargs)`` makes it, on a simulated
    clock: a line of ``baudrate`` (8N1: 10 bits a byte) behind a 4 KiB transmit buffer,
    which stops draining for good once ``drain_budget`` bytes have left (flow control
    held, or a device that stopped reading). A write waits for room as pyserial's does:
    up to ``write_timeout``, then ``SerialTimeoutException``; without one, forever. A read
    with nothing to read waits out ``timeout``. Replies come from ``device`` if given."""

    def __init__(
        self,
        url: str,
        clock: Clock,
        drain_budget: float = float("inf"),
        device: Any = None,
        baudrate: int = 9600,
        timeout: float | None = None,
        write_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.clock = clock
        self.baudrate = baudrate
        self._timeout = timeout
        self.write_timeout = write_timeout
        self.drain_budget = drain_budget
        self.device = device
        self.queued = 0.0  # bytes in the transmit buffer
        self.drained = 0.0  # bytes that left on the line
        self.written = bytearray()  # every byte the port took
        self.timeout_sets = 0
        self.closed = False

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self.timeout_sets += 1  # pyserial reconfigures the port (tcsetattr) on every set
        self._timeout = value

    def _pass(self, dt: float) -> None:
        self.clock.now += dt
        out = min(self.queued, self.baudrate / 10 * dt, self.drain_budget - self.drained)
        self.queued -= out
        self.drained += out

    def write(self, data: bytes) -> int:
        if self.closed:
            raise serial.PortNotOpenError()
        room = max(0, int(TX_BUFFER - self.queued))
        head, rest = data[:room], data[room:]
        self.queued += len(head)
        self.written += head
        if rest:
            rate = self.baudrate / 10
            stalls = self.drained + self.queued + len(rest) - TX_BUFFER > self.drain_budget
            wait = float("inf") if stalls else len(rest) / rate
            if self.write_timeout is None and stalls:
                raise Hang(f"write to {self.url} blocks forever")
            if self.write_timeout is not None and wait > self.write_timeout:
                taken = 0 if stalls else int(rate * self.write_timeout)  # what fits while it waits
                self._pass(self.write_timeout)
                self.queued += taken
                self.written += rest[:taken]
                raise serial.SerialTimeoutException("Write timeout")
            self._pass(wait)
            self.queued += len(rest)
            self.written += rest
        if self.device is not None:
            self.device.take(bytes(data))
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.device.outbox) if self.device is not None else 0

    def read(self, size: int = 1) -> bytes:
        out = self.device.outbox if self.device is not None else bytearray()
        data = bytes(out[:size])
        del out[:size]
        if not data:
            self._pass(self._timeout or 0.0)
        return data

    def close(self) -> None:
        self.closed = True


class EchoDevice:
    """Our receiver (mcu/) with the OS group only: enough to answer an echo."""

    def __init__(self) -> None:
        self.inbox = bytearray()
        self.outbox = bytearray()
        server = SmpServer(8192, 4)
        OsGroup(lambda: None, "swap-move").register(server)
        self.receiver = Receiver(self, server, "console")

    def read(self, n: int) -> bytes:
        data = bytes(self.inbox[:n])
        del self.inbox[:n]
        return data

    def write(self, data: bytes) -> None:
        self.outbox += data

    def take(self, wire: bytes) -> None:
        self.inbox += wire
        for _ in range(len(wire) + 2):
            if not self.receiver.poll():
                break


class Ports:
    """``serial.serial_for_url``, replaced: hands out FakeUarts, made as told."""

    def __init__(self, clock: Clock, *plans: dict[str, Any]) -> None:
        self.clock = clock
        self.plans = list(plans)
        self.made: list[FakeUart] = []
        self.kwargs: list[dict[str, Any]] = []

    def __call__(self, url: str, **kwargs: Any) -> FakeUart:
        self.kwargs.append(kwargs)
        plan = self.plans.pop(0) if self.plans else {}
        port = FakeUart(url, self.clock, **plan, **kwargs)
        self.made.append(port)
        return port


@pytest.fixture
def clock() -> Clock:
    return Clock()


def install(monkeypatch: pytest.MonkeyPatch, clock: Clock, *plans: dict[str, Any]) -> Ports:
    ports = Ports(clock, *plans)
    monkeypatch.setattr(serial, "serial_for_url", ports)
    return ports


def wire_time(nbytes: int, baud: int) -> float:
    return nbytes * 10 / baud  # 8N1: a start bit, 8 data bits, a stop bit


def echo_packet(size: int) -> bytes:
    """An SMP echo request of about ``size`` bytes (built by the ``smp`` package)."""
    return bytes(smpos.EchoWriteRequest(d="x" * size, sequence=1))


# -- a port that stops draining ------------------------------------------------------------------


@pytest.mark.parametrize("baud", [9600, 115200, 1_000_000])
def test_a_port_that_stops_draining_is_a_link_error(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, baud: int
) -> None:
    ports = install(monkeypatch, clock, {"drain_budget": 1000})
    link = SerialLink(URL, baud, clock=clock)
    packet = echo_packet(4000)
    frame = link.frame(packet)
    with pytest.raises(LinkError) as err:
        link.send(packet)
    message = str(err.value)
    assert "\n" not in message and URL in message and "timed out" in message
    assert ports.made[0].closed and link._port is None
    # It gave up in time: within twice the frame's own time on the line, and 2 s more.
    assert clock.now <= 2 * wire_time(len(frame), baud) + 2.0
    # The device may hold half a line: the next open ends it before the next request.
    link.send(packet)
    assert bytes(ports.made[1].written) == b"\n" + frame


def test_a_stalled_write_is_retried_like_any_link_error(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    ports = install(monkeypatch, clock, {"drain_budget": 0}, {"device": EchoDevice()})
    client = SmpClient(SerialLink(URL, 115200, clock=clock), timeout_s=1.0, retries=1)
    text = "y" * 5000  # a frame larger than the transmit buffer
    assert client.echo(text) == text
    assert len(ports.made) == 2 and ports.made[0].closed


# -- a healthy slow line never times out ------------------------------------------------------


@pytest.mark.parametrize("baud", [9600, 115200, 921600, 3_000_000])
@pytest.mark.parametrize("size", [100, 4096, 65000])
def test_a_healthy_slow_line_never_times_out(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, baud: int, size: int
) -> None:
    # A UART behind its transmit buffer, draining at the line's speed.
    ports = install(monkeypatch, clock)
    link = SerialLink(URL, baud, clock=clock)
    packet = echo_packet(size)
    link.send(packet)
    frame = link.frame(packet)
    assert bytes(ports.made[0].written) == frame
    assert clock.now >= wire_time(len(frame) - TX_BUFFER, baud) * 0.99  # it did take its time
    assert ports.kwargs[0]["write_timeout"] is not None  # and could have timed out


# -- the read timeout is set once ----------------------------------------------------------------


def test_reads_do_not_reconfigure_the_port(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    ports = install(monkeypatch, clock)
    link = SerialLink(URL, 115200, clock=clock)
    for _ in range(5):
        assert link.recv(0.5) is None
    port = ports.made[0]
    assert ports.kwargs[0]["timeout"] is not None  # set when the port opens
    assert port.timeout_sets == 0
    assert 2.5 <= clock.now <= 2.5 + 5 * port.timeout  # each wait kept to its deadline, or
    # overshot it by at most one read


def test_a_port_from_another_opener_gets_its_read_timeout_once(clock: Clock) -> None:
    device = EchoDevice()
    port = FakeUart(URL, clock, device=device)
    client = SmpClient(SerialLink(URL, opener=lambda u, b: port, clock=clock), timeout_s=0.5)
    for _ in range(3):
        assert client.echo("hi") == "hi"
        assert client.link.recv(0.3) is None
    assert port.timeout_sets == 1 and port.timeout is not None


# -- a real pseudo-terminal that nobody reads -----------------------------------------------------


@pytest.fixture
def unread_pty() -> Iterator[str]:
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("framing", ["console", "raw"])
def test_a_full_pty_ends_in_a_link_error(unread_pty: str, framing: str) -> None:
    link = SerialLink(
        unread_pty, 115200, framing, opener=lambda u, b: open_serial(u, b, write_timeout=0.2)
    )
    packet = echo_packet(60000)
    with pytest.raises(LinkError) as err:
        for _ in range(64):  # some MiB, far more than a pty holds
            link.send(packet)
    message = str(err.value)
    assert "\n" not in message and unread_pty in message and "timed out" in message
    assert link._port is None
    assert 0 < link.bytes_out < 64 * len(link.frame(packet))
