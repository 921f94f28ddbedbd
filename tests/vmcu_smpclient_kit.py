"""What the smpclient-against-fota-vmcu tests share: the images (one that confirms itself, one
that crashes, one that never confirms), a virtual MCU on a pty running the first, and
smpclient connections and requests on it.

The virtual MCU boots through the MCUboot model and runs the mcu/ receiver as its firmware.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest
from smp import header as smphdr
from smp import image_management as smpimg
from smpclient import SMPClient
from smpclient.generics import SMPRequest, TEr1, TEr2, TRep, error_v2, success
from smpclient.requests.image_management import ImageStatesRead, ImageUploadWrite
from smpclient.requests.os_management import ResetWrite
from smpclient.transport.serial import SMPSerialRawTransport, SMPSerialTransport

from bootloader.formats.image import load_image
from bootloader.formats.layout import Layout
from bootloader.sim.testimages import payload, sign
from harness.vmcu import Vmcu

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
