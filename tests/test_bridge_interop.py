"""The bridge's wire bytes against the reference implementations: the ``smp`` package's
messages and console framing, and smpmgr's view of a device next to ``fota-bridge state``.
"""

from __future__ import annotations

import binascii
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest
from bridge_kit import client_for, firmware, tlv_hash
from hypothesis import given, settings
from hypothesis import strategies as st
from smp import header as smphdr
from smp import image_management as smpimg
from smp import os_management as smpos
from smp import packet as smppacket
from smpclient.transport.serial import SMPSerialRawTransport, SMPSerialTransport

from fota_common.cli import EXIT_OK
from harness.vmcu import Vmcu
from host_bridge import cli
from host_bridge.smp.link import SerialLink
from host_bridge.smp.upload import chunk_sizes, upload, upload_packet
from mcu import smp_frame as sf

MiB: Final = 1 << 20
SMPMGR_TIMEOUT_S: Final = 30.0


# -- upload packets --------------------------------------------------------------------------


def smp_upload(version: int, seq: int, **fields: Any) -> bytes:
    req = smpimg.ImageUploadWriteRequest(**fields, sequence=seq, version=smphdr.Version(version))
    return bytes(req)


@pytest.mark.parametrize("version", [0, 1])
def test_first_and_continuation_chunks_equal_smp_requests(version: int) -> None:
    image = bytes(range(256)) * 20
    sha = hashlib.sha256(image).digest()
    first_n, cont_n = chunk_sizes(512, "console")
    first = upload_packet(
        version, 7, 0, image[:first_n], {"image": 0, "len": len(image), "sha": sha}
    )
    assert first == smp_upload(
        version, 7, off=0, data=image[:first_n], image=0, len=len(image), sha=sha
    )
    upgrade = upload_packet(
        version, 8, 0, image[:first_n], {"image": 0, "len": len(image), "sha": sha, "upgrade": True}
    )
    assert upgrade == smp_upload(
        version, 8, off=0, data=image[:first_n], image=0, len=len(image), sha=sha, upgrade=True
    )
    cont = upload_packet(version, 9, first_n, image[first_n : first_n + cont_n])
    assert cont == smp_upload(version, 9, off=first_n, data=image[first_n : first_n + cont_n])
    # And smp reads ours back as the request it is.
    parsed = smpimg.ImageUploadWriteRequest.loads(first)
    assert (parsed.off, parsed.len, parsed.sha, parsed.image) == (0, len(image), sha, 0)
    assert parsed.header.sequence == 7 and parsed.header.version == version


@settings(max_examples=60, deadline=None)
@given(
    off=st.integers(0, 16 * MiB),
    size=st.integers(1, 3000),
    seq=st.integers(0, 255),
)
def test_any_continuation_chunk_equals_smp(off: int, size: int, seq: int) -> None:
    data = bytes([seq]) * size
    assert upload_packet(1, seq, off, data) == smp_upload(1, seq, off=off, data=data)


# -- console framing -------------------------------------------------------------------------


def smp_decode(wire: bytes) -> bytes:
    """smp.packet.decode over our lines, one line at a time."""
    decoder = smppacket.decode()
    next(decoder)
    lines = wire.splitlines(keepends=True)
    for line in lines:
        try:
            decoder.send(line)
        except StopIteration as done:
            assert line is lines[-1], "smp finished before the last line"
            return bytes(done.value)
    raise AssertionError("smp wanted more lines")


@pytest.mark.parametrize("size", [1, 90, 91, 92, 93, 200, 1500, 4000])
def test_our_console_framing_decodes_with_smp(size: int) -> None:
    image = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
    packet = upload_packet(1, 3, 1024, image[:size])
    link = SerialLink("unused://", framing="console")
    wire = link.frame(packet)
    assert all(len(line) <= sf.LINE_LIMIT for line in wire.splitlines(keepends=True))
    assert smp_decode(wire) == packet


class ScriptedPort:
    """A port that reads back prepared bytes a few at a time and records writes."""

    def __init__(self, incoming: bytes, piece: int = 37) -> None:
        self.incoming = incoming
        self.piece = piece
        self.timeout: float | None = None
        self.written = bytearray()

    @property
    def in_waiting(self) -> int:
        return min(self.piece, len(self.incoming))

    def read(self, size: int = 1) -> bytes:
        out, self.incoming = self.incoming[:size], self.incoming[size:]
        return out

    def write(self, data: bytes) -> int:
        self.written += data
        return len(data)

    def close(self) -> None:
        pass


def smp_requests() -> list[bytes]:
    image = bytes(range(251)) * 12
    return [
        bytes(smpos.EchoWriteRequest(d="hi", sequence=1)),
        bytes(smpimg.ImageStatesReadRequest(sequence=2)),
        bytes(
            smpimg.ImageUploadWriteRequest(
                off=0, data=image[:1800], image=0, len=len(image), sha=b"\x11" * 32, sequence=3
            )
        ),
        bytes(smpimg.ImageUploadWriteRequest(off=1800, data=image[1800:], sequence=4)),
    ]


@pytest.mark.parametrize("line_length", [127, 128, 64])
def test_smp_console_framing_decodes_in_our_link(line_length: int) -> None:
    requests = smp_requests()
    wire = b"console text before\n" + b"".join(
        b"".join(smppacket.encode(r, line_length=line_length)) for r in requests
    )
    port = ScriptedPort(wire)
    link = SerialLink("scripted://", framing="console", opener=lambda url, baud: port)
    got = []
    for _ in requests:
        packet = link.recv(1.0)
        assert packet is not None
        got.append(packet)
    assert got == requests
    assert link.recv(0.01) is None
    # The device's decoder, given the same bytes in odd pieces, agrees.
    decoder = sf.ConsoleDecoder(4096)
    decoded = [p for i in range(0, len(wire), 29) for p in decoder.feed(wire[i : i + 29])]
    assert decoded == requests


def test_raw_framing_is_the_packet_itself() -> None:
    requests = smp_requests()
    port = ScriptedPort(b"".join(requests), piece=100)
    link = SerialLink("scripted://", framing="raw", opener=lambda url, baud: port)
    assert [link.recv(1.0) for _ in requests] == requests
    link.send(requests[0])
    assert bytes(port.written) == requests[0]


# -- chunk sizes -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    buf_size=st.integers(128, 8192),
    framing=st.sampled_from(["console", "raw"]),
    size=st.integers(32, 16 * MiB),
    off=st.integers(1, 16 * MiB),
    upgrade=st.booleans(),
    version=st.sampled_from([0, 1]),
)
def test_chunks_fit_the_device_buffer(
    buf_size: int, framing: str, size: int, off: int, upgrade: bool, version: int
) -> None:
    first_n, cont_n = chunk_sizes(buf_size, framing)
    assert 32 <= first_n <= cont_n
    fields: dict[str, object] = {"image": 0, "len": size, "sha": b"\xff" * 32}
    if upgrade:
        fields["upgrade"] = True
    packets = [
        upload_packet(version, 255, 0, b"\xa5" * min(first_n, size), fields),
        upload_packet(version, 255, off, b"\xa5" * cont_n),
    ]
    # The limit is upstream's, and smpclient's: Zephyr's mcumgr_serial_process_frag decodes
    # a console frame's 2-byte length, the packet and its 2-byte CRC into one buf_size
    # netbuf (mcumgr_serial_decode_frag stops at the tailroom), so a packet is at most
    # buf_size - 4, which is smpclient's max_unencoded_size for that buf_size; in raw
    # framing it drops a packet (header included) longer than the netbuf.
    if framing == "console":
        transport = SMPSerialTransport()
        transport.initialize(buf_size)
        limit = transport.max_unencoded_size
        assert limit == buf_size - 4
    else:
        limit = SMPSerialRawTransport(mtu=buf_size).max_unencoded_size
        assert limit == buf_size
    link = SerialLink("unused://", framing=framing)
    for packet in packets:
        assert len(packet) <= limit
        if framing == "console":
            # What the frame's lines decode to, one by one, is what fills the netbuf.
            lines = link.frame(packet).split(b"\n")[:-1]
            netbuf = b"".join(binascii.a2b_base64(line[2:]) for line in lines)
            assert len(netbuf) == 2 + len(packet) + 2 <= buf_size
            assert smp_decode(link.frame(packet)) == packet
        else:
            assert link.frame(packet) == packet
    # Chunks are not needlessly small: at the largest offset (the longest encoding) a
    # continuation is within one 8-byte alignment step of the limit.
    assert cont_n % 8 == 0
    assert len(upload_packet(version, 255, 16 * MiB, b"\xa5" * cont_n)) + 8 >= limit


# -- fota-bridge state against smpmgr ----------------------------------------------------------

SMPMGR_ROW: Final = re.compile(r"ImageState\((?P<fields>.*)\)\s*$")
FIELD: Final = re.compile(
    r"(\w+)=(?:HashBytes\('(?P<hash>[0-9A-Fa-f]+)'\)|'(?P<str>[^']*)'|"
    r"(?P<word>\w+))"
)


def smpmgr_command() -> list[str]:
    """smpmgr from this interpreter's environment: ``-m smpmgr``, else its script."""
    if importlib.util.find_spec("smpmgr.__main__") is not None:
        return [sys.executable, "-m", "smpmgr"]
    script = Path(sys.executable).with_name("smpmgr")
    if not script.exists():
        pytest.fail("smpmgr is not installed next to this interpreter: pip install smpmgr")
    return [str(script)]


def smpmgr_state(port: Path) -> list[dict[str, Any]]:
    env = {**os.environ, "COLUMNS": "500", "NO_COLOR": "1"}
    proc = subprocess.run(
        [*smpmgr_command(), "--port", str(port), "image", "state-read"],
        capture_output=True,
        text=True,
        timeout=SMPMGR_TIMEOUT_S,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = []
    for line in proc.stdout.splitlines():
        m = SMPMGR_ROW.search(line)
        if m is None:
            continue
        row: dict[str, Any] = {}
        for f in FIELD.finditer(m.group("fields")):
            name = f.group(1)
            if f.group("hash") is not None:
                row[name] = f.group("hash").lower()
            elif f.group("str") is not None:
                row[name] = f.group("str")
            else:
                word = f.group("word")
                row[name] = {"True": True, "False": False}.get(word, word)
                if word.isdigit():
                    row[name] = int(word)
        rows.append(row)
    assert rows, proc.stdout
    return rows


def test_state_json_agrees_with_smpmgr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v1, v2 = firmware("1.0.0", seed="interop-v1"), firmware("2.0.0", seed="interop-v2")
    with Vmcu(tmp_path, load=v1) as vm:
        client = client_for(vm)
        assert upload(client, v2).match is True
        client.state_write(tlv_hash(v2), confirm=False)  # slot 1: pending
        client.link.close()

        assert cli.main(["state", "--port", str(vm.link), "--json"]) == EXIT_OK
        ours = json.loads(capsys.readouterr().out)["images"]
        theirs = smpmgr_state(vm.link)

    assert [row["slot"] for row in ours] == [0, 1]
    assert len(theirs) == len(ours)
    keys = (
        "image",
        "slot",
        "version",
        "hash",
        "active",
        "confirmed",
        "pending",
        "permanent",
        "bootable",
    )
    for mine, reference in zip(ours, theirs, strict=True):
        assert {k: mine[k] for k in keys} == {k: reference[k] for k in keys}
    assert ours[1]["pending"] and ours[1]["hash"] == tlv_hash(v2).hex()
