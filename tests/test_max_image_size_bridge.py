"""The largest image a slot holds, in the bridge: its CLI (``sign``, ``upload``) and its
daemon (a job).

For every board layout in each MCUboot mode its slots allow, an image of exactly the limit
is accepted, and one byte more refused with a message a person can act on; without a board
the bridge takes the receiver's limit.  The limit is MCUboot's, computed from its text in
max_image_kit.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import max_image_kit
import pytest
from max_image_kit import HASH_TLVS, Case, Receiver, by_case, new_flash

from bootloader.sim.testimages import payload
from fota_common.cli import EXIT_ERROR, EXIT_OK
from host_bridge import cli, commands
from host_bridge.config import BridgeConfig, DeviceConfig
from host_bridge.daemon import Bridge
from host_bridge.image.download import DownloadError
from host_bridge.jobs.client import BrokerConfig
from host_bridge.jobs.documents import parse_document
from host_bridge.store import InFlight

# the kit's fixtures, bound here for pytest to find
layout_dir = max_image_kit.layout_dir
case = max_image_kit.case


# -- the bridge ----------------------------------------------------------------------------


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's error: one line, ``fota-bridge: error: <what>``; returns <what>."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    prefix = "fota-bridge: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix) :]


@by_case()
def test_bridge_sign_and_upload_take_the_largest_image_and_refuse_one_byte_more(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    lay = case.layout
    raw = tmp_path / "app.bin"
    out = tmp_path / "app.img"
    raw.write_bytes(payload(case.limit - lay.header_size - HASH_TLVS, "bridge"))
    sign_args = ["sign", str(raw), str(out), "--version", "2.0.0", "--board", str(case.toml)]
    assert cli.main(sign_args) == EXIT_OK
    assert out.stat().st_size == case.limit
    raw.write_bytes(payload(case.limit + 1 - lay.header_size - HASH_TLVS, "bridge"))
    capsys.readouterr()
    assert cli.main(sign_args) == EXIT_ERROR
    assert one_line_error(capsys) == (
        f"signed image is {case.limit + 1} bytes but the slot holds at most {case.limit}"
    )

    at, over = tmp_path / "at.img", tmp_path / "over.img"
    at.write_bytes(case.at_limit)
    over.write_bytes(case.over)
    parser = cli.build_parser()

    def upload_args(path: Path) -> Any:
        return parser.parse_args(
            ["upload", "--port", "socket://127.0.0.1:9", "--board", str(case.toml), str(path)]
        )

    assert len(commands._image(upload_args(at), None).data) == case.limit
    # The refusal comes before any device is contacted (nothing listens on that port).
    code = cli.main(
        ["upload", "--port", "socket://127.0.0.1:9", "--board", str(case.toml), str(over)]
    )
    assert code == EXIT_ERROR
    assert one_line_error(capsys) == (
        f"{over}: image is {case.limit + 1} bytes but the slot holds at most {case.limit} bytes"
    )


@by_case()
def test_bridge_without_a_board_uses_the_receivers_limit(case: Case) -> None:

    rx = Receiver(case, new_flash(case))

    class Client:
        def slot_info(self) -> dict[str, Any]:
            return rx.slot_info()

    args = cli.build_parser().parse_args(["upload", "--port", "x", "image.img"])
    _, limit = commands._signing_params(args, Client())
    assert limit == case.limit


class DeviceReached(Exception):
    """The daemon went on to the device: the image passed every check before it."""


class Jobs:
    def __init__(self, broker: Any, things: list[str], on_next: Any) -> None:
        self.connected = threading.Event()
        self.updates: list[tuple[str, str, Any]] = []

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def update(
        self, thing: str, job_id: str, status: str, details: Any = None, *a: Any, **k: Any
    ) -> dict[str, Any]:
        self.updates.append((job_id, status, details))
        return {"executionState": {"status": status, "versionNumber": 2}}

    def describe(self, thing: str, job_id: str) -> None:
        return None


@by_case()
def test_the_daemon_takes_the_largest_image_and_refuses_one_byte_more(
    case: Case, tmp_path: Path
) -> None:

    def reached(device: DeviceConfig) -> Any:
        raise DeviceReached()

    cfg = BridgeConfig(
        broker=BrokerConfig("127.0.0.1", 1883),
        devices=[DeviceConfig("thing", "/dev/null", board=str(case.toml))],
        state_dir=tmp_path / "state",
    )
    bridge = Bridge(cfg, jobs_factory=Jobs, client_factory=reached)
    try:
        cache = cfg.state_dir / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        worker = bridge.workers["thing"]

        def run(img: bytes, with_size: bool) -> None:
            sha = hashlib.sha256(img).hexdigest()
            (cache / f"{sha}.bin").write_bytes(img)  # downloaded before: no network
            document = {"operation": "fota", "url": "https://fw.example/a.img", "sha256": sha}
            if with_size:
                document["size"] = len(img)
            job = parse_document(document, raw_length=100)
            worker.current, worker.version = "j1", 1
            worker.run_job("j1", job, InFlight("thing", "j1", 1, 1, "downloading"))

        message = f"the image is {case.limit + 1} bytes but the slot holds at most {case.limit}"
        for with_size in (True, False):
            with pytest.raises(DownloadError) as info:
                run(case.over, with_size)
            assert str(info.value) == message + " bytes"
        with pytest.raises(DeviceReached):
            run(case.at_limit, True)
    finally:
        bridge.store.close()
