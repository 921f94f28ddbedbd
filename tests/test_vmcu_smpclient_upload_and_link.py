"""smpclient, the stock SMP client, against fota-vmcu over a real pty: the upload edge cases a
gateway relies on, and the link.

The virtual MCU boots through the MCUboot model and runs the mcu/ receiver as its firmware:
resume by sha after a dropped connection, the "wrong offset -> expected offset" reply, an
oversize length refused (SMPv2 and SMPv1), raw framing, a power cut mid-upload, and a host
that stops reading.
"""

from __future__ import annotations

import os
import select
import time
from contextlib import suppress
from hashlib import sha256
from pathlib import Path

import cbor2
import vmcu_smpclient_kit
from smp import error as smperr
from smp import header as smphdr
from smp.os_management import EchoWriteResponse
from smpclient.requests.image_management import ImageStatesWrite, ImageUploadWrite
from smpclient.requests.os_management import EchoWrite
from vmcu_smpclient_kit import (
    CHUNK,
    ERR,
    Images,
    ask,
    connected,
    refused,
    reset_until,
    run,
    slots,
    upload,
    upload_from,
)

from harness.vmcu import Vmcu
from mcu import smp_frame as sf

# the kit's fixtures, bound here for pytest to find
images = vmcu_smpclient_kit.images
vm = vmcu_smpclient_kit.vm


def test_resume_after_a_dropped_connection(vm: Vmcu, images: Images, tmp_path: Path) -> None:
    image = images.v2
    sha = sha256(image).digest()
    first = ImageUploadWrite(off=0, data=image[:CHUNK], len=len(image), sha=sha)

    async def start() -> int:
        async with connected(vm) as client:
            assert (await ask(client, first)).off == CHUNK
            response = await ask(client, ImageUploadWrite(off=CHUNK, data=image[CHUNK : 3 * CHUNK]))
            assert response.off == 3 * CHUNK
            return response.off

    accepted = run(start())
    # The link drops in the middle of the next request: only its first line got out.
    cut = ImageUploadWrite(off=accepted, data=image[accepted : accepted + 400])
    frame = sf.encode_console(cut.BYTES)
    fd = os.open(vm.link, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, frame[: frame.index(b"\n") + 1])
    finally:
        os.close(fd)

    async def resume() -> None:
        async with connected(vm) as client:
            response = await ask(client, first)  # off=0 with the same sha: a resume
            assert response.off == accepted
            assert response.match is None
            last = await upload_from(client, image, response.off)
            assert last.match is True
            assert (await slots(client))[1].hash == images.tlv_hash(tmp_path, image)

    run(resume())


def test_a_wrong_offset_gets_success_and_the_expected_offset(
    vm: Vmcu, images: Images, tmp_path: Path
) -> None:
    image = images.v2

    async def go() -> None:
        async with connected(vm) as client:
            sha = sha256(image).digest()
            first = ImageUploadWrite(off=0, data=image[:CHUNK], len=len(image), sha=sha)
            assert (await ask(client, first)).off == CHUNK
            for wrong in (CHUNK + 64, CHUNK // 2, len(image) - 1):
                chunk = image[wrong : wrong + 8]
                response = await ask(client, ImageUploadWrite(off=wrong, data=chunk))
                assert response.off == CHUNK  # dropped, and told where to go on
            last = await upload_from(client, image, CHUNK)
            assert last.match is True
            assert (await slots(client))[1].hash == images.tlv_hash(tmp_path, image)

    run(go())


def test_an_oversize_len_is_refused(vm: Vmcu, images: Images) -> None:
    # tiny: slot 1 is 0x1200 bytes, less one 0x200 sector for MCUboot's trailer.
    too_big = 0x1000 + 1
    data = images.v2[:CHUNK]

    async def go() -> None:
        async with connected(vm) as client:
            request = ImageUploadWrite(off=0, data=data, len=too_big)
            assert await refused(client, request) == ERR.INVALID_IMAGE_TOO_LARGE
            legacy = ImageUploadWrite(off=0, data=data, len=too_big, version=smphdr.Version.V1)
            # SMPv1: the group error becomes a legacy rc, as Zephyr translates it.  (smp
            # parses {"rc": n} as the upload response's legacy rc field, so check the bytes.)
            response = await client.request(legacy)
            assert response.header.version == smphdr.Version.V1
            assert cbor2.loads(response.BYTES[8:]) == {"rc": smperr.MGMT_ERR.EUNKNOWN}
            ok = await ask(client, ImageUploadWrite(off=0, data=data, len=too_big - 1))
            assert ok.off == CHUNK

    run(go())


def test_raw_framing(tmp_path: Path, images: Images) -> None:
    with Vmcu(tmp_path, "tiny", load=images.v1, args=["--framing", "raw"]) as vm:

        async def go() -> None:
            async with connected(vm, raw=True) as client:
                assert (await ask(client, EchoWrite(d="raw"))).r == "raw"
                await upload(client, images.v2)
                await ask(client, ImageStatesWrite(hash=images.tlv_hash(tmp_path, images.v2)))
                await reset_until(client, vm, r"boot 2: .*version 2\.0\.0", "confirmed itself")
                states = await slots(client)
                assert (states[0].version, states[0].confirmed) == ("2.0.0", True)

        run(go())


def test_power_cut_mid_upload(vm: Vmcu, images: Images, tmp_path: Path) -> None:
    image = images.v2
    first = ImageUploadWrite(off=0, data=image[:CHUNK], len=len(image), sha=sha256(image).digest())

    async def start() -> None:
        async with connected(vm) as client:
            assert (await ask(client, first)).off == CHUNK

    async def after() -> None:
        async with connected(vm) as client:
            assert list(await slots(client)) == [0]  # the half image is no image
            # The session lived in RAM: off=0 starts over (from off 0, not a resume).
            assert (await ask(client, first)).off == CHUNK
            assert (await upload_from(client, image, CHUNK)).match is True

    run(start())
    vm.kill()
    vm.start()
    vm.wait_for_log(r"boot 1: swap type none, running version 1\.0\.0 \(confirmed\)")
    run(after())


def write_within(fd: int, data: bytes, timeout_s: float) -> None:
    """Write all of ``data`` to a non-blocking fd, or fail once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    view = memoryview(data)
    while view:
        left = deadline - time.monotonic()
        assert left > 0, "the MCU stopped reading its input"
        _, ready, _ = select.select([], [fd], [], left)
        if ready:
            with suppress(BlockingIOError):
                view = view[os.write(fd, view) :]


def read_until(fd: int, wanted: bytes, timeout_s: float) -> bool:
    """Read a non-blocking fd until ``wanted`` has gone by; False once ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    seen = b""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            with suppress(BlockingIOError):
                seen = seen[-len(wanted) :] + os.read(fd, 65536)
            if wanted in seen:
                return True
    return False


def test_a_host_that_stops_reading_does_not_wedge_the_mcu(vm: Vmcu) -> None:
    # Thirty 2.6 KB replies nobody reads overflow the pty's buffer.  A UART would just lose
    # them: the MCU must keep reading, drop its output, and still stop cleanly on SIGTERM.
    requests = b"".join(sf.encode_console(EchoWrite(d="x" * 1900).BYTES) for _ in range(30))
    fd = os.open(vm.link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        write_within(fd, requests, timeout_s=10.0)
        vm.wait_for_log(r"tx: \d+ bytes dropped")
        # Reading again, the host gets answers again; an answered marker also tells that
        # every request before it has been handled (they are handled in order).
        for attempt in range(10):
            marker = EchoWrite(d=f"marker {attempt}", sequence=200 + attempt)
            reply = EchoWriteResponse(r=marker.d, sequence=marker.sequence)
            write_within(fd, sf.encode_console(marker.BYTES), timeout_s=2.0)
            if read_until(fd, sf.encode_console(reply.BYTES), timeout_s=1.0):
                break
        else:
            raise AssertionError("no answer once the host reads again")
    finally:
        os.close(fd)

    async def go() -> None:
        async with connected(vm) as client:
            assert (await ask(client, EchoWrite(d="still here"))).r == "still here"

    run(go())
