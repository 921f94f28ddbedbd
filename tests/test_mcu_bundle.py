"""tools/mcu_bundle.py: the library folder a board gets (``just mcu-bundle``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import mcu_bundle

DEVICE_MODULES = {"fota", "fota_doc", "jobs", "md5", "mcuboot", "bootutil", "flash_area"}


def test_bundle_compiles_every_device_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mcu_bundle.main(["--out", str(tmp_path)]) == 0
    lib = tmp_path / "lib" / "mcu"
    names = {p.stem for p in lib.iterdir()}
    assert names == {p.stem for p in mcu_bundle.sources()}
    assert names >= DEVICE_MODULES and "code" not in names
    for mpy in lib.iterdir():
        assert mpy.suffix == ".mpy" and mpy.read_bytes()[:1] == b"M"
    assert (tmp_path / "code.py").read_text().startswith("# code.py for a CircuitPython board")
    assert "CIRCUITPY/lib/mcu" in capsys.readouterr().out


def test_sources_bundle_and_rebuild_replace_the_folder(tmp_path: Path) -> None:
    assert mcu_bundle.main(["--out", str(tmp_path)]) == 0
    assert mcu_bundle.main(["--out", str(tmp_path), "--sources"]) == 0
    assert {p.suffix for p in (tmp_path / "lib" / "mcu").iterdir()} == {".py"}


def test_a_missing_compiler_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-mpy-cross"
    assert mcu_bundle.main(["--out", str(tmp_path / "b"), "--mpy-cross", str(missing)]) == 2
    assert "cannot run mpy-cross" in capsys.readouterr().err
