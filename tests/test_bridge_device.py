"""The bridge's device side against fota-vmcu on a real pty.

The virtual MCU runs the mcu/ SMP receiver behind the MCUboot model, so what the bridge
uploads lands in a flash file these tests read back.  Covered: windowed uploads in both
framings, resume after the link is cut, an upload that survives a device reset, the resync
after a lost or corrupted chunk, refusals before any byte is sent, and the whole update flow
(confirmed, reverted by the device, confirmed by the bridge, reverted after a crash).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Final

import cbor2
import pytest
from bridge_kit import (
    FrameMangler,
    LinkCutter,
    client_for,
    firmware,
    slot,
    slot_bytes,
    tiny_layout,
    tlv_hash,
)

from bootloader.sim.testimages import keygen
from fota_common.cli import EXIT_ERROR
from fota_common.errors import DeviceError, ImageError, SmpTimeout
from harness.vmcu import Vmcu
from host_bridge import cli
from host_bridge.device import DeviceUpdater, Outcome, UpdateOptions
from host_bridge.image.prepare import IMAGE_MAGIC, load_trusted_keys, prepare
from host_bridge.image.sign import SigningParams, sign_payload
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink
from host_bridge.smp.upload import FIRST_REPLY_TIMEOUT_S, UploadResult, chunk_sizes, upload
from mcu import smp_frame as sf

MAX_IMAGE: Final = tiny_layout().max_image_size()
UPDATE = UpdateOptions(confirm_timeout_s=1.0, boot_timeout_s=10.0, poll_s=0.05)


@pytest.fixture(scope="module")
def v1() -> bytes:
    return firmware("1.0.0", seed="v1")


@pytest.fixture(scope="module")
def v2() -> bytes:
    """The update: 2.0.0 that confirms itself, large enough for many small chunks."""
    image = firmware("2.0.0", "confirm", size=3600)
    assert len(image) <= MAX_IMAGE
    return image


def assert_in_slot1(vm: Vmcu, client: SmpClient, image: bytes) -> None:
    """The device holds ``image``: its state read reports the TLV hash, its flash the bytes."""
    states = client.image_state()
    staged = slot(states, 1)
    assert staged is not None, states
    assert staged.hash == tlv_hash(image)
    assert not staged.pending and not staged.active
    assert slot_bytes(vm, 1, len(image)) == image


def assert_clean(result: UploadResult, image: bytes) -> None:
    assert result.match is True
    assert result.size == len(image)
    assert result.sent_bytes == len(image)  # nothing sent twice
    assert (result.resumed_from, result.resyncs, result.retries) == (0, 0, 0)


# -- uploads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("framing", "window", "buf_size"),
    [
        ("console", 1, 256),
        ("console", 2, 512),
        ("console", 3, 2048),
        ("console", 3, 128),
        ("raw", 1, 2048),
        ("raw", 2, 256),
        ("raw", 3, 128),
    ],
)
def test_upload_lands_byte_for_byte(
    tmp_path: Path, v1: bytes, v2: bytes, framing: str, window: int, buf_size: int
) -> None:
    args = ["--framing", framing, "--buf-size", str(buf_size)]
    with Vmcu(tmp_path, load=v1, args=args) as vm:
        client = client_for(vm, framing)
        result = upload(client, v2, window=window, buf_size=buf_size)
        assert_clean(result, v2)
        assert (result.window, result.chunk) == (window, chunk_sizes(buf_size, framing)[1])
        assert_in_slot1(vm, client, v2)


@pytest.mark.parametrize("framing", ["console", "raw"])
def test_upload_sizes_itself_from_mcumgr_params(
    tmp_path: Path, v1: bytes, v2: bytes, framing: str
) -> None:
    args = ["--framing", framing, "--buf-size", "384", "--buf-count", "3"]
    with Vmcu(tmp_path, load=v1, args=args) as vm:
        client = client_for(vm, framing)
        result = upload(client, v2)
        assert_clean(result, v2)
        assert (result.window, result.chunk) == (2, chunk_sizes(384, framing)[1])
        assert_in_slot1(vm, client, v2)


@pytest.mark.parametrize(
    ("framing", "torn"),
    [("console", False), ("console", True), ("raw", False)],
    ids=["console-between-packets", "console-mid-line", "raw-between-packets"],
)
def test_upload_resumes_after_the_link_is_cut(
    tmp_path: Path, v1: bytes, v2: bytes, framing: str, torn: bool
) -> None:
    buf = 256
    first, chunk = chunk_sizes(buf, framing)
    expansion = 4 / 3 if framing == "console" else 1.0
    cutter = LinkCutter(budget=int(len(v2) * 0.4 * expansion), torn=torn)
    with Vmcu(tmp_path, load=v1, args=["--framing", framing, "--buf-size", str(buf)]) as vm:
        client = client_for(vm, framing, opener=cutter)
        result = upload(client, v2, window=3, buf_size=buf)
        assert cutter.cut and cutter.opens == 2
        assert result.match is True
        # The device kept its upload state: the upload went on from where the device stood,
        # re-sending no more than the resume probe (one first chunk).
        assert first < result.resumed_from < len(v2)
        assert result.resumed_from >= len(v2) // 4  # ~40% of the wire bytes went through
        assert result.sent_bytes < len(v2) + chunk
        assert result.sent_bytes <= len(v2) + first
        assert result.retries >= 1
        # A cut mid-line must not leave the probe to wait out its erase timeout.
        assert result.seconds < FIRST_REPLY_TIMEOUT_S / 3
        assert_in_slot1(vm, client, v2)


def test_upload_survives_a_device_reset(tmp_path: Path, v1: bytes, v2: bytes) -> None:
    """fota-vmcu is restarted on the same flash at ~40%: the receiver keeps its upload
    offset in RAM and loses it, so the upload starts over from 0 and still delivers the image."""
    with Vmcu(tmp_path, load=v1, args=["--buf-size", "256"]) as vm:
        client = client_for(vm)
        restarted_at: list[int] = []

        def progress(done: int, total: int) -> None:
            if not restarted_at and done >= total * 0.4:
                restarted_at.append(done)
                vm.restart()

        result = upload(client, v2, window=3, buf_size=256, progress=progress)
        assert vm.starts == 2 and restarted_at
        assert result.match is True
        assert result.retries >= 1
        if result.resumed_from == 0:  # started over: what was sent before went again
            assert result.sent_bytes >= len(v2) + restarted_at[0]
        else:  # a receiver that keeps its upload state across a reset
            assert 0 < result.resumed_from < len(v2)
        assert_in_slot1(vm, client, v2)
        vm.wait_for_log(r"boot 1: swap type none, running version 1\.0\.0")


@pytest.mark.parametrize(
    ("framing", "mode", "window"),
    [("console", "drop", 3), ("console", "corrupt", 3), ("raw", "drop", 2), ("console", "drop", 1)],
)
def test_upload_resyncs_after_a_lost_chunk(
    tmp_path: Path, v1: bytes, v2: bytes, framing: str, mode: str, window: int
) -> None:
    buf = 256
    _first, chunk = chunk_sizes(buf, framing)
    mangler = FrameMangler(index=4, mode=mode)
    with Vmcu(tmp_path, load=v1, args=["--framing", framing, "--buf-size", str(buf)]) as vm:
        client = client_for(vm, framing, opener=mangler)
        result = upload(client, v2, window=window, buf_size=buf, timeout_s=0.5)
        assert mangler.mangled == 1
        assert result.match is True
        if window > 1:
            # The chunk after the lost one got "success, but I expect offset X": resync.
            assert result.resyncs >= 1
        else:
            # Nothing followed the lost chunk: its reply timed out and it went again.
            assert result.retries >= 1
        # What was re-sent is the lost chunk and the ones in flight behind it.
        assert result.sent_bytes <= len(v2) + window * chunk
        assert_in_slot1(vm, client, v2)


# -- refusals before upload ------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    return keygen(d / "signer.pem"), keygen(d / "other.pem")


def test_wrong_key_is_refused_before_upload(
    tmp_path: Path, v1: bytes, keys: tuple[Path, Path]
) -> None:
    signer, other = keys
    signed = sign_payload(b"app" * 500, signer, "2.0.0", SigningParams(header_size=0x20))
    assert prepare(signed, trusted_keys=load_trusted_keys([signer])).version == "2.0.0"
    with pytest.raises(ImageError, match="refused before upload"):
        prepare(signed, trusted_keys=load_trusted_keys([other]))

    image = tmp_path / "signed.img"
    image.write_bytes(signed)
    with Vmcu(tmp_path, load=v1) as vm:
        client = client_for(vm)
        before = client.image_state()
        code = cli.main(["upload", str(image), "--port", str(vm.link), "--trust", str(other)])
        assert code == EXIT_ERROR
        assert client.image_state() == before
        assert slot(before, 1) is None
        assert slot_bytes(vm, 1, 512) == b"\xff" * 512  # no first chunk erased or wrote it


def test_oversize_image_is_refused_with_both_sizes(
    tmp_path: Path, v1: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    big = sign_payload(b"\x5a" * MAX_IMAGE, None, "2.0.0", SigningParams(header_size=0x20))
    assert len(big) > MAX_IMAGE
    with pytest.raises(ImageError) as refused:
        prepare(big, max_image_size=MAX_IMAGE)
    assert f"{len(big)} bytes" in str(refused.value)
    assert f"{MAX_IMAGE} bytes" in str(refused.value)

    image = tmp_path / "big.img"
    image.write_bytes(big)
    with Vmcu(tmp_path, load=v1) as vm:
        client = client_for(vm)
        before = client.image_state()
        # The limit comes from the device's slot info: no --board given.
        code = cli.main(["upload", str(image), "--port", str(vm.link), "--json"])
        assert code == EXIT_ERROR
        err = capsys.readouterr().err
        assert f"{len(big)} bytes" in err and f"{MAX_IMAGE} bytes" in err
        assert client.image_state() == before
        assert slot_bytes(vm, 1, 512) == b"\xff" * 512


# -- the update flow ---------------------------------------------------------------------------


def run_update(vm: Vmcu, image: bytes, policy: str = "device") -> Outcome:
    phases: list[str] = []
    outcome = DeviceUpdater(
        client_for(vm, timeout_s=0.5),
        dataclasses.replace(UPDATE, policy=policy),
        lambda phase, done, total: phases.append(phase),
    ).update(prepare(image))
    if outcome.upload is not None:
        assert phases[0] == "uploading" and "testing" in phases
        assert phases[-1] == "confirming"
    return outcome


def final_state(vm: Vmcu) -> tuple[str, bytes, bool]:
    running = slot(client_for(vm).image_state(), 0)
    assert running is not None and running.active
    return running.version, running.hash, running.confirmed


def test_update_confirmed_by_the_new_firmware(tmp_path: Path, v1: bytes, v2: bytes) -> None:
    with Vmcu(tmp_path, load=v1) as vm:
        outcome = run_update(vm, v2)
        assert outcome.status == "confirmed", outcome
        assert (outcome.version, outcome.hash) == ("2.0.0", tlv_hash(v2).hex())
        assert outcome.upload is not None and outcome.upload.match is True
        vm.wait_for_log(r"boot 2: swap type test, running version 2\.0\.0")
        vm.wait_for_log(r"firmware confirmed itself")
        assert final_state(vm) == ("2.0.0", tlv_hash(v2), True)
        # Again: the device already runs it, confirmed; nothing is sent.
        again = run_update(vm, v2)
        assert (again.status, again.upload) == ("confirmed", None)
        assert again.reason == "already running this image"


@pytest.mark.parametrize(
    ("on_boot", "policy", "status", "version"),
    [
        ("stay-unconfirmed", "device", "reverted", "1.0.0"),
        ("stay-unconfirmed", "bridge", "confirmed", "2.0.0"),
        ("crash", "device", "reverted", "1.0.0"),
    ],
)
def test_update_outcomes(
    tmp_path: Path, v1: bytes, on_boot: str, policy: str, status: str, version: str
) -> None:
    image = firmware("2.0.0", on_boot)
    with Vmcu(tmp_path, load=v1) as vm:
        outcome = run_update(vm, image, policy)
        assert outcome.status == status, outcome
        assert outcome.version == version
        vm.wait_for_log(r"boot 2: swap type test, running version 2\.0\.0")
        running_version, running_hash, confirmed = final_state(vm)
        assert (running_version, confirmed) == (version, True)
        if status == "reverted":
            assert running_hash == tlv_hash(v1)
            assert "did not confirm" in outcome.reason
            vm.wait_for_log(r"swap type revert, running version 1\.0\.0")
        else:
            assert running_hash == tlv_hash(image)
            assert "confirmed by the bridge" in outcome.log


# -- the client against a scripted peer ---------------------------------------------------------


class ScriptedDevice:
    """A port with an SMP peer behind it: each request packet goes to ``answer``, which
    returns the reply packet (or None for silence); replies come back console-framed."""

    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.timeout: float | None = None
        self._decoder = sf.ConsoleDecoder(4096)
        self._out = bytearray()

    @property
    def in_waiting(self) -> int:
        return len(self._out)

    def read(self, size: int = 1) -> bytes:
        data = bytes(self._out[:size])
        del self._out[:size]
        return data

    def write(self, data: bytes) -> int:
        for packet in self._decoder.feed(data):
            self.requests.append(packet)
            reply = self.answer(packet)
            if reply is not None:
                self._out += sf.encode_console(reply)
        return len(data)

    def close(self) -> None:
        pass


def reply_to(request: bytes, body: dict[str, object], version: int | None = None) -> bytes:
    op, ver, _f, _n, group, seq, cid = sf.unpack_header(request)
    payload = cbor2.dumps(body)
    return (
        sf.pack_header(
            op + 1, ver if version is None else version, 0, len(payload), group, seq, cid
        )
        + payload
    )


def scripted_client(device: ScriptedDevice) -> SmpClient:
    return SmpClient(SerialLink("scripted://", opener=lambda url, baud: device), timeout_s=0.2)


def test_a_reset_without_reply_is_sent_once() -> None:
    """A retried reset could hit the image the first one booted for its test, before it
    confirms itself, and so make MCUboot revert a good update."""
    device = ScriptedDevice(lambda request: None)
    client = scripted_client(device)
    with pytest.raises(SmpTimeout):
        client.reset()
    resets = [p for p in device.requests if sf.unpack_header(p)[4:] == (0, 1, 5)]
    assert len(device.requests) == len(resets) == 1
    # Requests that are safe to repeat still are.
    with pytest.raises(SmpTimeout):
        client.image_state()
    assert len(device.requests) == 1 + 1 + client.retries


@pytest.mark.parametrize("reply_version", [0, 1])
def test_smpv1_fallback_after_unsupported_too_new(reply_version: int) -> None:
    """A v1-only device answers a v2 request with rc 13 (UNSUPPORTED_TOO_NEW), whatever
    version its header carries: the client says it again in v1, without using a retry."""

    def answer(request: bytes) -> bytes:
        if sf.unpack_header(request)[1] == sf.VERSION_2:
            return reply_to(request, {"rc": sf.RC_UNSUPPORTED_TOO_NEW}, reply_version)
        return reply_to(request, {"r": cbor2.loads(request[8:])["d"]})

    device = ScriptedDevice(answer)
    client = SmpClient(
        SerialLink("scripted://", opener=lambda url, baud: device), timeout_s=0.2, retries=0
    )
    assert client.echo("hello") == "hello"
    assert [sf.unpack_header(p)[1] for p in device.requests] == [1, 0]
    assert client.echo("again") == "again"
    assert [sf.unpack_header(p)[1] for p in device.requests] == [1, 0, 0]


def test_device_errors_come_back_typed() -> None:
    def answer(request: bytes) -> bytes:
        return reply_to(request, {"err": {"group": 1, "rc": 9}})  # NO_FREE_SLOT

    client = scripted_client(ScriptedDevice(answer))
    with pytest.raises(DeviceError, match="NO_FREE_SLOT") as refused:
        upload(client, IMAGE_MAGIC + bytes(2000), window=1, buf_size=512)
    assert (refused.value.rc, refused.value.group) == (9, 1)
