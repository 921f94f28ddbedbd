"""``fota-bridge`` from the command line: keys, signing, upload, update and state against
fota-vmcu, with ``--json`` parsed; and its errors, which are one line and an exit code.

Commands that succeed run in-process (``cli.main``); errors run as a real process, so the
test sees exactly what a shell sees: the exit status and every line on stderr.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest
from bridge_kit import client_for, firmware, slot, tlv_hash

from bootloader.sim.testimages import payload
from fota_common.cli import EXIT_ERROR, EXIT_NO, EXIT_OK
from harness.procs import REPO_ROOT
from harness.vmcu import Vmcu
from host_bridge import cli

CLI_TIMEOUT_S: Final = 60.0


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "host_bridge.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fota-bridge: ")
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def main_json(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, dict]:
    code = cli.main([*map(str, args), "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.fixture(scope="module")
def v1() -> bytes:
    return firmware("1.0.0", seed="cli-v1")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    return d


# -- keys and signing ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519"])
def test_keys_new_writes_a_private_key_0600_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    key = tmp_path / "signing.pem"
    code, doc = main_json(capsys, "keys", "new", key, "--type", kind)
    assert code == EXIT_OK and doc == {"key": str(key), "type": kind}
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_bytes()
    assert first.startswith(b"-----BEGIN PRIVATE KEY-----")

    assert cli.main(["keys", "new", str(key)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.splitlines()) == 1
    assert key.read_bytes() == first


def test_keys_new_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("keys", "new", tmp_path / "no" / "such" / "dir" / "k.pem")
    assert_one_line_error(proc, EXIT_ERROR, "cannot write")


def test_sign_output_verifies_with_imgtool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "signing.pem"
    assert cli.main(["keys", "new", str(key)]) == EXIT_OK
    capsys.readouterr()
    raw, out = tmp_path / "app.bin", tmp_path / "app.img"
    raw.write_bytes(payload(2000, "cli-sign"))
    code, doc = main_json(
        capsys, "sign", raw, out, "--key", key, "--version", "1.4.2+9", "--board", "tiny"
    )
    assert code == EXIT_OK and doc == {"output": str(out), "bytes": out.stat().st_size}
    proc = subprocess.run(
        [sys.executable, "-m", "imgtool.main", "verify", "-k", str(key), str(out)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Image was correctly validated" in proc.stdout
    assert "1.4.2+9" in proc.stdout


# -- against the virtual MCU -------------------------------------------------------------------


def test_state_lists_the_slots(
    tmp_path: Path, v1: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    with Vmcu(tmp_path, load=v1) as vm:
        code, doc = main_json(capsys, "state", "--port", vm.link)
        assert code == EXIT_OK
        assert [(r["slot"], r["version"], r["active"], r["confirmed"]) for r in doc["images"]] == [
            (0, "1.0.0", True, True)
        ]
        assert doc["images"][0]["hash"] == tlv_hash(v1).hex()

        assert cli.main(["state", "--port", str(vm.link)]) == EXIT_OK
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["slot", "version", "flags", "hash"]
        assert table[1].split() == ["0", "1.0.0", "active", "confirmed", tlv_hash(v1).hex()]


def test_upload_test_reset_boots_the_new_image(
    tmp_path: Path, v1: bytes, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v2 = firmware("2.0.0", seed="cli-v2")
    path = images / "v2.img"
    path.write_bytes(v2)
    with Vmcu(tmp_path, load=v1, args=["--buf-size", "512"]) as vm:
        since = vm.mark()
        code, doc = main_json(
            capsys, "upload", path, "--port", vm.link, "--test", "--reset", "--window", "2"
        )
        assert code == EXIT_OK
        assert doc["bytes"] == len(v2) and doc["resumed_from"] == 0
        assert (doc["version"], doc["hash"]) == ("2.0.0", tlv_hash(v2).hex())
        assert (doc["marked"], doc["reset"]) == ("test", True)
        vm.wait_for_log(r"boot 2: swap type test, running version 2\.0\.0", since=since)
        running = slot(client_for(vm).image_state(), 0)
        assert running is not None and running.version == "2.0.0"


def test_update_confirmed_exits_0(
    tmp_path: Path, v1: bytes, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v2 = firmware("2.0.0", "confirm", seed="cli-update")
    path = images / "v2.img"
    path.write_bytes(v2)
    with Vmcu(tmp_path, load=v1) as vm:
        code, doc = main_json(
            capsys,
            "update",
            path,
            "--port",
            vm.link,
            "--timeout",
            "0.5",
            "--confirm-timeout",
            "2",
            "--boot-timeout",
            "10",
        )
        assert code == EXIT_OK, doc
        assert (doc["status"], doc["version"], doc["hash"]) == (
            "confirmed",
            "2.0.0",
            tlv_hash(v2).hex(),
        )
        assert doc["upload"]["bytes"] == len(v2) and doc["upload"]["resumed_from"] == 0


def test_update_that_reverts_exits_1(
    tmp_path: Path, v1: bytes, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = firmware("2.0.0", "stay-unconfirmed", seed="cli-revert")
    path = images / "v2.img"
    path.write_bytes(bad)
    with Vmcu(tmp_path, load=v1) as vm:
        code, doc = main_json(
            capsys,
            "update",
            path,
            "--port",
            vm.link,
            "--timeout",
            "0.5",
            "--confirm-timeout",
            "0.5",
            "--boot-timeout",
            "10",
        )
        assert code == EXIT_NO, doc
        assert (doc["status"], doc["version"]) == ("reverted", "1.0.0")
        assert "did not confirm" in doc["reason"]


def test_raw_binary_signed_on_the_fly(
    tmp_path: Path, v1: bytes, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = images / "app.bin"
    raw.write_bytes(payload(1500, "cli-raw"))
    with Vmcu(tmp_path, load=v1) as vm:
        code, doc = main_json(
            capsys, "upload", raw, "--port", vm.link, "--version", "3.1.4", "--board", "tiny"
        )
        assert code == EXIT_OK
        assert doc["version"] == "3.1.4" and doc["marked"] is None
        staged = slot(client_for(vm).image_state(), 1)
        assert staged is not None and staged.version == "3.1.4"
        assert staged.hash.hex() == doc["hash"]


# -- errors: one line on stderr, exit 2, no traceback ------------------------------------------


def test_missing_image_file(tmp_path: Path) -> None:
    proc = run_cli("upload", tmp_path / "absent.img", "--port", tmp_path / "no-such-tty")
    assert_one_line_error(proc, EXIT_ERROR, "cannot read image", "absent.img")


def test_bad_port(tmp_path: Path, v1: bytes) -> None:
    image = tmp_path / "v1.img"
    image.write_bytes(v1)
    proc = run_cli("upload", image, "--port", tmp_path / "no-such-tty")
    assert_one_line_error(proc, EXIT_ERROR, "cannot open", "no-such-tty")
    proc = run_cli("state", "--port", tmp_path / "no-such-tty", "--json")
    assert_one_line_error(proc, EXIT_ERROR, "cannot open")
    assert proc.stdout == ""


def test_raw_binary_without_version(tmp_path: Path) -> None:
    raw = tmp_path / "app.bin"
    raw.write_bytes(payload(600, "cli-noversion"))
    proc = run_cli("update", raw, "--port", tmp_path / "no-such-tty")
    assert_one_line_error(proc, EXIT_ERROR, "not an MCUboot image", "--version")


def test_bad_confirm_hash(tmp_path: Path) -> None:
    proc = run_cli("confirm", "not-hex", "--port", tmp_path / "no-such-tty")
    assert_one_line_error(proc, EXIT_ERROR, "not-hex")
