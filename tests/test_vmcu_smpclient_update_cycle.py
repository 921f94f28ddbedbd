"""smpclient, the stock SMP client, against fota-vmcu over a real pty: the OS group, the image
states and MCUboot's test/confirm/revert cycle.

The virtual MCU boots through the MCUboot model and runs the mcu/ receiver as its firmware:
echo, parameters and bootloader info, a paced upload at a small buffer size, the state read's
SHA256 TLV, upload-test-reset with the firmware confirming itself, the revert of a crashing
or unconfirmed image, and erase with its refusals.
"""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

import vmcu_smpclient_kit
from smpclient.requests.image_management import ImageErase, ImageStatesWrite, ImageUploadWrite
from smpclient.requests.os_management import (
    BootloaderInformationRead,
    EchoWrite,
    MCUMgrParametersRead,
)
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
)

from harness.vmcu import Vmcu

# the kit's fixtures, bound here for pytest to find
images = vmcu_smpclient_kit.images
vm = vmcu_smpclient_kit.vm


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
