"""`fota-boot` acceptance: the issue's command sequences, run through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bootloader.formats.layout import load_board
from bootloader.sim.cli import main
from bootloader.sim.testimages import keygen, payload, sign


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture
def files(tmp_path: Path, tiny_pair: tuple[bytes, bytes]) -> dict[str, str]:
    (tmp_path / "v1.img").write_bytes(tiny_pair[0])
    (tmp_path / "v2.img").write_bytes(tiny_pair[1])
    return {
        "v1": str(tmp_path / "v1.img"),
        "v2": str(tmp_path / "v2.img"),
        "flash": str(tmp_path / "flash.bin"),
    }


def fb(files: dict[str, str]) -> list[str]:
    return ["--board", "tiny", "--flash", files["flash"]]


def booted(capsys: pytest.CaptureFixture[str], files: dict[str, str], *extra: str) -> dict:
    code, out = run(capsys, *fb(files), "boot", "--json", *extra)
    assert code in (0, 3), out
    doc: dict = json.loads(out)
    return doc


def test_test_revert_confirm_sequence(
    capsys: pytest.CaptureFixture[str], files: dict[str, str]
) -> None:
    assert run(capsys, *fb(files), "load", "0", files["v1"])[0] == 0
    assert run(capsys, *fb(files), "load", "1", files["v2"])[0] == 0
    assert run(capsys, *fb(files), "pending")[0] == 0
    doc = booted(capsys, files)
    assert doc["swap_type"] == "test" and doc["booted"]["version"] == "2.0.0"
    assert doc["flash_ops"] > 0
    doc = booted(capsys, files)
    assert doc["swap_type"] == "revert" and doc["booted"]["version"] == "1.0.0"
    assert run(capsys, *fb(files), "pending")[0] == 0
    assert booted(capsys, files)["booted"]["version"] == "2.0.0"
    assert run(capsys, *fb(files), "confirm")[0] == 0
    doc = booted(capsys, files)
    assert doc["swap_type"] == "none" and doc["booted"]["version"] == "2.0.0"
    assert doc["booted"]["confirmed"] is True


def test_power_cut_at_every_op_then_boot_matches_clean_run(
    capsys: pytest.CaptureFixture[str], files: dict[str, str], tmp_path: Path
) -> None:
    run(capsys, *fb(files), "load", "0", files["v1"])
    run(capsys, *fb(files), "load", "1", files["v2"])
    run(capsys, *fb(files), "pending")
    start = Path(files["flash"]).read_bytes()
    clean = booted(capsys, files)
    total = clean["flash_ops"]
    assert total > 10
    for n in range(1, total + 1):
        Path(files["flash"]).write_bytes(start)
        code, out = run(capsys, *fb(files), "boot", "--power-cut-at", str(n), "--json")
        assert code == 3, f"cut {n}: {out}"
        assert json.loads(out)["flash_ops"] == n - 1
        after = booted(capsys, files)
        assert after["booted"]["hash"] == clean["booted"]["hash"], f"cut {n}"


def test_inspect_and_signature_required_boot(
    capsys: pytest.CaptureFixture[str], files: dict[str, str], tmp_path: Path
) -> None:

    key = tmp_path / "k.pem"
    keygen(key, "ecdsa-p256")
    signed = tmp_path / "s.img"
    signed.write_bytes(sign(payload(900, "s"), "3.1.4", load_board("tiny"), key))
    code, out = run(capsys, "inspect", str(signed), "--key", str(key), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["ok"] and doc["signature"] == "ok"
    # hash-only image while a key is trusted: rejected, exit 1, reason given
    code, out = run(capsys, "inspect", files["v1"], "--key", str(key))
    assert code == 1 and "rejected" in out
    # the boot model refuses to swap an unsigned image when keys are configured
    run(capsys, *fb(files), "load", "0", str(signed))
    run(capsys, *fb(files), "load", "1", files["v2"])
    run(capsys, *fb(files), "pending")
    doc = booted(capsys, files, "--key", str(key))
    assert doc["booted"]["version"] == "3.1.4" and doc["swap_type"] == "none"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--board", "nope", "--flash", "x", "boot"], "unknown board"),
        (["boot"], "needs --board"),
        (["--board", "tiny", "--flash", "F", "load", "7", "x.img"], "unknown slot"),
        (["--board", "tiny", "--flash", "F", "load", "1", "/nonexistent.img"], "cannot read"),
        (["inspect", "/nonexistent.img"], "cannot read"),
    ],
)
def test_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    argv = [a.replace("F", str(tmp_path / "f.bin")) if a == "F" else a for a in argv]
    code, out = run(capsys, *argv)
    assert code == 2
    assert message in out
    assert len(out.strip().splitlines()) == 1
    assert "Traceback" not in out


def test_boards_lists_layouts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "boards")
    assert code == 0 and "nrf52840" in out and "swap-move" in out
