"""smpclient, the stock SMP client, against fota-vmcu over a real pty.

The virtual MCU boots through the MCUboot model and runs the mcu/ receiver as its firmware,
so these tests cover the whole device side as a host sees it: framing (console and raw), the
OS and image groups, MCUboot's test/confirm/revert cycle and the upload edge cases a gateway
relies on (resume by sha, the "wrong offset -> expected offset" reply, refusals).
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Final, TypeVar

import cbor2
import pytest
from smp import error as smperr
from smp import header as smphdr
from smp import image_management as smpimg
from smp.os_management import EchoWriteResponse
from smpclient import SMPClient
from smpclient.generics import SMPRequest, TEr1, TEr2, TRep, error_v2, success
from smpclient.requests.image_management import (
    ImageErase,
    ImageStatesRead,
    ImageStatesWrite,
    ImageUploadWrite,
)
from smpclient.requests.os_management import (
    BootloaderInformationRead,
    EchoWrite,
    MCUMgrParametersRead,
    ResetWrite,
)
from smpclient.transport.serial import SMPSerialRawTransport, SMPSerialTransport

from bootloader.formats.image import load_image
from bootloader.formats.layout import Layout
from bootloader.sim.testimages import payload, sign
from harness.vmcu import Vmcu
from mcu import smp_frame as sf

T = TypeVar("T")

TEST_TIMEOUT_S: Final = 20.0  # one asyncio.run
REQUEST_TIMEOUT_S: Final = 3.0
CHUNK: Final = 256  # data bytes per hand-made upload request
ERR: Final = smpimg.IMG_MGMT_ERR


@dataclass(frozen=True)
class Images:
    v1: bytes
    v2: bytes  # plain payload: confirms itself on its test boot
    crash: bytes  # 2.0.0 that crashes before confirming
    stay: bytes  # 2.0.0 that runs but never confirms

    def tlv_hash(self, tmp_path: Path, image: bytes) -> bytes:
        """The image's SHA256 TLV (what SMP reports as its hash), read by our codec."""
        path = tmp_path / f"{sha256(image).hexdigest()[:12]}.img"
        path.write_bytes(image)
        digest = load_image(path).sha256_tlv
        assert digest is not None
        return digest


@pytest.fixture(scope="module")
def images(tiny: Layout, tiny_pair: tuple[bytes, bytes]) -> Images:
    def with_behaviour(on_boot: str) -> bytes:
        head = b'#vmcu:{"on_boot": "' + on_boot.encode() + b'"}\n'
        return sign(head + payload(1500, on_boot), "2.0.0", tiny)

    v1, v2 = tiny_pair
    return Images(v1, v2, with_behaviour("crash"), with_behaviour("stay-unconfirmed"))


@pytest.fixture
def vm(tmp_path: Path, images: Images) -> Iterator[Vmcu]:
    with Vmcu(tmp_path, "tiny", load=images.v1) as running:
        yield running


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


@asynccontextmanager
async def connected(vm: Vmcu, raw: bool = False) -> AsyncIterator[SMPClient]:
    transport = SMPSerialRawTransport() if raw else SMPSerialTransport()
    client = SMPClient(transport, str(vm.link), timeout_s=REQUEST_TIMEOUT_S)
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


async def ask(client: SMPClient, request: SMPRequest[TRep, TEr1, TEr2]) -> TRep:
    """The success response to ``request``; anything else fails the test."""
    response = await client.request(request)
    assert success(response), response
    return response


async def refused(client: SMPClient, request: SMPRequest[TRep, TEr1, TEr2]) -> int:
    """The image group error code an SMPv2 request is refused with."""
    response = await client.request(request)
    assert error_v2(response), response
    assert response.err.group == smphdr.GroupId.IMAGE_MANAGEMENT
    return int(response.err.rc)


async def slots(client: SMPClient) -> dict[int, smpimg.ImageState]:
    response = await ask(client, ImageStatesRead())
    return {state.slot: state for state in response.images}


async def reset_until(client: SMPClient, vm: Vmcu, *patterns: str) -> None:
    """Reset over SMP, then wait for each of the log lines the reboots must print."""
    mark = vm.mark()
    await ask(client, ResetWrite())
    for pattern in patterns:
        vm.wait_for_log(pattern, since=mark)


async def upload(client: SMPClient, image: bytes) -> list[int]:
    offsets = [off async for off in client.upload(image)]
    assert offsets[-1] == len(image)
    return offsets


async def upload_from(client: SMPClient, image: bytes, off: int) -> smpimg.ImageUploadWriteResponse:
    """Send ``image[off:]`` in CHUNK-byte continuation requests; the last response."""
    assert 0 < off < len(image)
    for _ in range(len(image) // CHUNK + 2):
        response = await ask(client, ImageUploadWrite(off=off, data=image[off : off + CHUNK]))
        assert response.off == min(off + CHUNK, len(image))
        off = response.off
        if off == len(image):
            return response
    raise AssertionError("upload did not finish")


def test_echo_params_and_bootloader_info(vm: Vmcu) -> None:
    async def go() -> None:
        async with connected(vm) as client:
            assert (await ask(client, EchoWrite(d="hello, vmcu"))).r == "hello, vmcu"
            params = await ask(client, MCUMgrParametersRead())
            assert (params.buf_size, params.buf_count) == (2048, 4)
            info = await ask(client, BootloaderInformationRead())
            assert info.bootloader == "MCUboot"

    run(go())


def test_params_and_paced_upload_follow_the_cli(tmp_path: Path, images: Images) -> None:
    # smpclient fills requests to buf_size - 4: with a 512-byte buffer that is the limit
    # the receiver must accept, at a UART's pace.
    args = ["--buf-size", "512", "--buf-count", "2", "--baud", "460800"]
    with Vmcu(tmp_path, "tiny", load=images.v1, args=args) as vm:

        async def go() -> None:
            async with connected(vm) as client:
                params = await ask(client, MCUMgrParametersRead())
                assert (params.buf_size, params.buf_count) == (512, 2)
                offsets = await upload(client, images.v2)
                assert len(offsets) >= len(images.v2) // 508
                assert (await slots(client))[1].hash == images.tlv_hash(tmp_path, images.v2)

        run(go())


def test_state_read_reports_the_sha256_tlv(vm: Vmcu, images: Images, tmp_path: Path) -> None:
    async def go() -> None:
        async with connected(vm) as client:
            states = await slots(client)
            assert list(states) == [0]
            primary = states[0]
            assert primary.version == "1.0.0"
            assert primary.hash == images.tlv_hash(tmp_path, images.v1)
            assert primary.hash != sha256(images.v1).digest()  # not the file's hash
            assert (primary.active, primary.confirmed, primary.pending) == (True, True, False)
            assert primary.bootable is True

    run(go())


def test_upload_test_reset_and_the_firmware_confirms(
    vm: Vmcu, images: Images, tmp_path: Path
) -> None:
    v2_hash = images.tlv_hash(tmp_path, images.v2)

    async def go() -> None:
        async with connected(vm) as client:
            await upload(client, images.v2)
            states = await slots(client)
            assert (states[1].version, states[1].hash) == ("2.0.0", v2_hash)
            assert states[1].pending is False

            written = await ask(client, ImageStatesWrite(hash=v2_hash))
            pending = {s.slot: s for s in written.images}[1]
            assert (pending.pending, pending.permanent, pending.confirmed) == (True, False, False)

            await reset_until(
                client, vm, r"boot 2: swap type test, running version 2\.0\.0", "confirmed itself"
            )
            states = await slots(client)
            assert states[0].version == "2.0.0" and states[0].hash == v2_hash
            assert (states[0].active, states[0].confirmed) == (True, True)
            assert states[1].version == "1.0.0"
            assert (states[1].pending, states[1].confirmed) == (False, False)

    run(go())
    vm.restart()  # a power cycle keeps it
    vm.wait_for_log(r"boot 1: swap type none, running version 2\.0\.0 \(confirmed\)")


def test_a_crashing_image_is_reverted(vm: Vmcu, images: Images, tmp_path: Path) -> None:
    async def go() -> None:
        async with connected(vm) as client:
            await upload(client, images.crash)
            await ask(client, ImageStatesWrite(hash=images.tlv_hash(tmp_path, images.crash)))
            await reset_until(
                client,
                vm,
                r"boot 2: swap type test, running version 2\.0\.0 \(unconfirmed\)",
                "crashed before confirming",
                r"boot 3: swap type revert, running version 1\.0\.0",
            )
            states = await slots(client)
            assert states[0].version == "1.0.0"
            assert (states[0].active, states[0].confirmed) == (True, True)
            assert states[1].version == "2.0.0"
            assert (states[1].pending, states[1].confirmed) == (False, False)

    run(go())


def test_an_unconfirmed_image_reverts_on_the_next_reset(
    vm: Vmcu, images: Images, tmp_path: Path
) -> None:
    async def go() -> None:
        async with connected(vm) as client:
            await upload(client, images.stay)
            await ask(client, ImageStatesWrite(hash=images.tlv_hash(tmp_path, images.stay)))
            await reset_until(client, vm, r"boot 2: .*version 2\.0\.0", "did not confirm itself")

            states = await slots(client)
            assert states[0].version == "2.0.0"
            assert (states[0].active, states[0].confirmed) == (True, False)
            # The old image is what the next boot goes back to: confirmed, and in use.
            assert (states[1].version, states[1].confirmed) == ("1.0.0", True)
            assert await refused(client, ImageErase(slot=1)) == ERR.NO_FREE_SLOT
            first = ImageUploadWrite(off=0, data=images.v2[:CHUNK], len=len(images.v2))
            assert await refused(client, first) == ERR.NO_FREE_SLOT

            await reset_until(client, vm, r"boot 3: swap type revert, running version 1\.0\.0")
            states = await slots(client)
            assert states[0].version == "1.0.0"
            assert (states[0].active, states[0].confirmed) == (True, True)

    run(go())


def test_erase_slot_1_and_refusals(vm: Vmcu, images: Images, tmp_path: Path) -> None:
    async def go() -> None:
        async with connected(vm) as client:
            await upload(client, images.v2)
            await ask(client, ImageErase(slot=1))
            assert list(await slots(client)) == [0]
            await ask(client, ImageErase())  # default slot 1, already erased: fine

            await upload(client, images.v2)
            await ask(client, ImageStatesWrite(hash=images.tlv_hash(tmp_path, images.v2)))
            assert (await slots(client))[1].pending is True
            assert await refused(client, ImageErase(slot=0)) == ERR.NO_FREE_SLOT
            # CONFIG_MCUMGR_GRP_IMG_ALLOW_ERASE_PENDING (img_mgmt_slot_in_use): a slot
            # pending for a test boot may be erased; the pending mark goes with it.
            await ask(client, ImageErase(slot=1))
            assert list(await slots(client)) == [0]

    run(go())


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
