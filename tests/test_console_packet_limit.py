"""The largest SMP packet a device takes, for every buf_size: the bridge's chunks fill it
exactly, our receiver takes them, and one byte more is refused.

The rule, from Zephyr (subsys/mgmt/mcumgr/transport/src/serial_util.c):
- console framing: mcumgr_serial_process_frag base64-decodes every line of a frame, with
  mcumgr_serial_decode_frag, into ONE netbuf of CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE bytes
  (smp_packet_alloc), refusing to decode past its tailroom; the 2-byte length is pulled and
  the 2-byte CRC stripped only once the whole frame is in. So 2 + packet + 2 <= buf_size;
- raw framing: the same function's raw branch drops a packet when 8 + the header's length
  exceeds CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE: packet <= buf_size.
buf_size is what mcumgr params reports: os_mgmt_mcumgr_params answers
CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE. smpclient agrees (the second oracle): its serial
transport, initialised with buf_size, sends at most max_unencoded_size = buf_size - 4 bytes;
its raw transport at most its mtu.

The receiver runs in-process behind a fake serial port (no pty), so the sweep over every
buf_size from 128 to 4096 takes seconds: a device whose upload session already holds the
first 64 KiB and more of an image (the link dropped; the first chunk resumes it) gets the
last two chunks, at offsets whose CBOR encoding is the longest (5 bytes), so both are the
largest chunk the bridge sends for that buf_size.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
from typing import Any, Final

import cbor2
import pytest
from smp import image_management as smpimg
from smpclient import SMPClient
from smpclient.requests.image_management import ImageUploadWrite
from smpclient.transport.serial import SMPSerialRawTransport, SMPSerialTransport

from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink
from host_bridge.smp.upload import chunk_sizes, upload, upload_packet
from mcu import smp_frame as sf
from mcu.flash_area import FlashAreaError, RamArea
from mcu.img_mgmt import ImageGroup, Upload
from mcu.os_mgmt import OsGroup
from mcu.receiver import Receiver
from mcu.smp_server import SmpServer

BUF_SIZES: Final = range(128, 4097)
SECTOR: Final = 4096
WRITE_BLOCK: Final = 8
SLOT: Final = 32 * SECTOR
LONG_OFF: Final = 1 << 16  # the first offset whose CBOR uint takes 5 bytes
IMAGE_SIZE: Final = LONG_OFF + 2 * SECTOR
MAX_U32: Final = (1 << 32) - 1


def make_image() -> bytes:
    """An image the device takes: an MCUboot header (image.h: magic 0x96f3b83d,
    hdr_size 32) and a body without a 0xff byte, so flash shows exactly what was written."""
    header = struct.pack("<IIHHIIBBHII", 0x96F3B83D, 0, 32, 0, IMAGE_SIZE - 32, 0, 1, 0, 0, 0, 0)
    body = bytes((i * 7 + 1) % 255 for i in range(IMAGE_SIZE - len(header)))
    return header + body


IMAGE: Final = make_image()


# -- oracles -----------------------------------------------------------------------------


def zephyr_console_netbuf(wire: bytes) -> bytes:
    """The bytes one console frame leaves in the device's netbuf: every line, marker and
    newline off, base64-decoded on its own and appended (mcumgr_serial_decode_frag)."""
    lines = wire.split(b"\n")
    assert lines[-1] == b"", "a frame ends with a newline"
    assert lines[0][:2] == b"\x06\x09" and all(x[:2] == b"\x04\x14" for x in lines[1:-1])
    return b"".join(binascii.a2b_base64(x[2:]) for x in lines[:-1])


def smpclient_console_limit(buf_size: int) -> int:
    transport = SMPSerialTransport()
    transport.initialize(buf_size)  # as smpclient does with the mcumgr params reply
    return int(transport.max_unencoded_size)


def smpclient_chunk(buf_size: int, off: int) -> int:
    """How much image data smpclient's upload puts in a continuation at ``off``."""
    transport = SMPSerialTransport()
    transport.initialize(buf_size)
    client = SMPClient(transport, "unused")
    _cbor_size, data_size = client.get_max_cbor_and_data_size(ImageUploadWrite(off=off, data=b""))
    return int(data_size)


def smpclient_raw_limit(buf_size: int) -> int:
    return int(SMPSerialRawTransport(mtu=buf_size).max_unencoded_size)


def request_of_length(n: int, seq: int = 0) -> bytes:
    """An image upload request (at a wrong offset: the device answers where it stands)
    of exactly ``n`` bytes, built with cbor2, not with the bridge's code."""
    # Canonical CBOR: a map of 2 (1 byte), "off" (4) and its uint, "data" (5), the byte
    # string's head (1, 2 or 3 bytes up to 65535) and its bytes.
    for off, off_len in ((MAX_U32, 5), (1000, 3), (100, 2), (5, 1)):
        for head in (1, 2, 3):
            k = n - 8 - 1 - 4 - off_len - 5 - head
            if k >= 0 and head == (1 if k < 24 else 2 if k < 256 else 3):
                body = cbor2.dumps({"off": off, "data": bytes(k)}, canonical=True)
                assert 8 + len(body) == n
                return struct.pack(">BBHHBB", (1 << 3) | 2, 0, len(body), 1, seq, 1) + body
    raise AssertionError(f"no upload request of {n} bytes")


# -- the device, in-process ----------------------------------------------------------------


class Flash(RamArea):
    """RamArea's NOR rules, checked a slice at a time (the sweep writes megabytes)."""

    def write(self, off: int, data: Any) -> None:
        n = len(data)
        ws = self.write_size
        if off % ws or n % ws or off < 0 or off + n > self.size:
            raise FlashAreaError("misaligned write")
        if self.mem.count(self.erased_val, off, off + n) != n:
            raise FlashAreaError("write to non-erased flash")
        self.mem[off : off + n] = data


class Device:
    """Our receiver (mcu/) with its flash in RAM; fed synchronously by :class:`HostPort`."""

    def __init__(self, buf_size: int, framing: str) -> None:
        self.inbox = bytearray()  # host -> device, not yet read by the receiver
        self.outbox = bytearray()  # device -> host
        self.primary = Flash(SLOT, SECTOR, WRITE_BLOCK)
        self.secondary = Flash(SLOT, SECTOR, WRITE_BLOCK)
        # What mcu.receiver.make_server builds, with the image group kept at hand.
        server = SmpServer(buf_size, 4)
        OsGroup(lambda: None, "swap-move").register(server)
        self.images = ImageGroup(self.primary, self.secondary, WRITE_BLOCK, 0, "swap-move")
        self.images.register(server)
        self.packets: list[int] = []  # the length of each packet the receiver decoded
        handle = server.handle

        def recording(packet: Any) -> Any:
            self.packets.append(len(packet))
            return handle(packet)

        server.handle = recording
        self.receiver = Receiver(self, server, framing, clock=lambda: 0)

    # the receiver's side of the wire
    def read(self, n: int) -> bytes:
        data = bytes(self.inbox[:n])
        del self.inbox[:n]
        return data

    def write(self, data: bytes) -> None:
        self.outbox += data

    def take(self, wire: bytes) -> None:
        self.inbox += wire
        for _ in range(len(wire) + 2):  # bounded: every poll but the last reads a byte or more
            if not self.receiver.poll():
                break


class HostPort:
    """The bridge's end of the wire (pyserial's interface): a write reaches the device at
    once; a read with nothing to read waits out ``timeout`` on a simulated clock."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.timeout: float | None = 0.05
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    @property
    def in_waiting(self) -> int:
        return len(self.device.outbox)

    def read(self, size: int = 1) -> bytes:
        out = self.device.outbox
        data = bytes(out[:size])
        del out[:size]
        if not data:
            self.now += self.timeout or 0.05
        return data

    def write(self, data: bytes) -> int:
        self.device.take(bytes(data))
        return len(data)

    def close(self) -> None:
        pass


def client_on(device: Device, framing: str) -> SmpClient:
    port = HostPort(device)
    link = SerialLink(
        "inproc://device", framing=framing, opener=lambda u, b: port, clock=port.clock
    )
    return SmpClient(link, timeout_s=1.0, retries=0)


def answered(device: Device, framing: str, packet: bytes) -> bool:
    """Whether the device answers ``packet`` (sent alone, in ``framing``)."""
    before = len(device.packets)
    device.outbox.clear()
    device.take(sf.encode_console(packet) if framing == "console" else packet)
    return len(device.packets) > before and len(device.outbox) > 0


def largest_chunk(cont_n: int) -> int:
    """The length of a continuation of ``cont_n`` bytes at a 5-byte offset, by ``smp``."""
    return len(bytes(smpimg.ImageUploadWriteRequest(off=LONG_OFF, data=bytes(cont_n))))


# -- the sizing, for every buf_size ------------------------------------------------------------


@pytest.mark.parametrize("framing", ["console", "raw"])
def test_every_chunk_fits_the_netbuf(framing: str) -> None:
    link = SerialLink("unused://", framing=framing)
    sha = hashlib.sha256(b"x").digest()
    for buf_size in BUF_SIZES:
        first_n, cont_n = chunk_sizes(buf_size, framing)
        # The longest encodings: a 4 GiB image, a 5-byte offset, the upgrade flag.
        fields = {"image": 0, "len": MAX_U32, "sha": sha, "upgrade": True}
        first = upload_packet(1, 255, 0, bytes(first_n), fields)
        cont = upload_packet(1, 255, MAX_U32 - cont_n, bytes(cont_n))
        assert len(cont) == largest_chunk(cont_n)
        for packet in (first, cont):
            if framing == "console":
                netbuf = zephyr_console_netbuf(link.frame(packet))
                assert netbuf[:2] == struct.pack(">H", len(packet) + 2), buf_size
                assert len(netbuf) == 2 + len(packet) + 2, buf_size
                assert len(netbuf) <= buf_size, f"buf_size {buf_size}: {len(netbuf)} bytes"
                assert len(packet) <= smpclient_console_limit(buf_size), buf_size
            else:
                assert link.frame(packet) == packet
                assert len(packet) <= buf_size, buf_size
                assert len(packet) <= smpclient_raw_limit(buf_size), buf_size
        # Not needlessly small: within one 8-byte alignment step of the limit.
        limit = smpclient_console_limit(buf_size) if framing == "console" else buf_size
        assert len(cont) + WRITE_BLOCK >= limit, buf_size
        if framing == "console":
            # smpclient's upload fills the limit exactly; ours is that, 8-byte aligned
            # (and a byte short under 256 bytes, where the data's length takes 2 bytes).
            theirs = smpclient_chunk(buf_size, LONG_OFF)
            assert theirs - WRITE_BLOCK <= cont_n <= theirs, (buf_size, cont_n, theirs)


# -- the receiver takes the largest chunk, and no more ---------------------------------------


@pytest.mark.parametrize("framing", ["console", "raw"])
def test_the_receiver_takes_the_largest_chunk_for_every_buf_size(framing: str) -> None:
    sha = hashlib.sha256(IMAGE).digest()
    # Every buf_size for the console framing; for raw, whose limit is the whole netbuf and
    # costs no base64, every 7th (all eight residues of the 8-byte chunk alignment).
    for buf_size in BUF_SIZES if framing == "console" else BUF_SIZES[::7]:
        _first_n, cont_n = chunk_sizes(buf_size, framing)
        device = Device(buf_size, framing)
        # An upload session cut short (the link dropped) two chunks before the end; the
        # first chunk, with the image's hash, picks it up.
        held = IMAGE_SIZE - 2 * cont_n
        assert held > LONG_OFF
        device.secondary.mem[:held] = IMAGE[:held]
        session = Upload(IMAGE_SIZE, sha, WRITE_BLOCK)
        session.off = session.flushed = held
        device.images.upload = session
        client = client_on(device, framing)
        result = upload(client, IMAGE, max_retries=0)
        assert (result.resumed_from, result.match) == (held, True), buf_size
        assert bytes(device.secondary.mem[:IMAGE_SIZE]) == IMAGE
        # Two chunks were the largest the bridge sends for this buf_size, and fit.
        biggest = largest_chunk(cont_n)
        assert device.packets.count(biggest) == 2, (buf_size, device.packets)
        limit = smpclient_console_limit(buf_size) if framing == "console" else buf_size
        assert max(device.packets) == biggest <= limit, buf_size
        # The limit is tight: the receiver takes a packet of exactly the limit, and
        # refuses one a byte longer (and is not thrown by it).
        assert answered(device, framing, request_of_length(limit, 1)), buf_size
        assert not answered(device, framing, request_of_length(limit + 1, 2)), buf_size
        assert answered(device, framing, request_of_length(40, 3)), buf_size
