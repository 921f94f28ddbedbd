"""The Zephyr devicetree overlays in bootloader/zephyr/boards: the committed overlays are
exactly what bootloader.overlay makes of the TOMLs, every partition in them has the TOML's
offset and size, and the overlay command line checks and writes them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from zephyr_kit import ZEPHYR_DIR

from bootloader import overlay
from bootloader.formats.layout import load_board

# --- Devicetree overlays ------------------------------------------------------------------

NODE_RE = re.compile(
    r"^\t\t(?P<labels>(?:[a-z_][a-z0-9_]*: )+)partition@(?P<unit>[0-9a-f]+) \{\n"
    r'\t\t\tlabel = "(?P<label>[^"]+)";\n'
    r"\t\t\treg = <(?P<offset>0x[0-9a-f]+) (?P<size>0x[0-9a-f]+)>;\n"
    r"(?P<ro>\t\t\tread-only;\n)?"
    r"\t\t\};$",
    re.MULTILINE,
)


def parse_partitions(text: str) -> dict[str, tuple[int, int]]:
    """Node label -> (offset, size) for the partitions of an overlay."""
    parts: dict[str, tuple[int, int]] = {}
    for match in NODE_RE.finditer(text):
        offset, size = int(match["offset"], 16), int(match["size"], 16)
        assert int(match["unit"], 16) == offset, "unit address differs from reg"
        for label in match["labels"].split(": ")[:-1]:
            parts[label] = (offset, size)
    return parts


def test_committed_overlays_are_up_to_date() -> None:
    stale = overlay.stale_overlays()
    assert not stale, f"run `just overlays`; stale: {[p.name for p in stale]}"
    committed = sorted(p.name for p in (ZEPHYR_DIR / "boards").glob("*.overlay"))
    assert committed == sorted(p.name for p in overlay.expected_overlays())


def test_one_overlay_per_zephyr_board() -> None:
    names = {layout.name: overlay.overlay_filename(layout) for _, layout in overlay.zephyr_boards()}
    assert names == {
        "native_sim": "native_sim.overlay",
        "nrf52840": "nrf52840dk_nrf52840.overlay",
        "rp2040": "rpi_pico_rp2040.overlay",
    }


@pytest.mark.parametrize("board", [layout.name for _, layout in overlay.zephyr_boards()], ids=str)
def test_overlay_partitions_match_the_toml(board: str) -> None:
    layout = load_board(board)
    text = (ZEPHYR_DIR / "boards" / overlay.overlay_filename(layout)).read_text()
    assert text.startswith("/*\n * Generated from bootloader/boards/")
    assert "do not edit" in text.splitlines()[1]
    assert "&flash0 {\n\t/delete-node/ partitions;\n};" in text
    assert 'compatible = "fixed-partitions";' in text
    # The same file goes to MCUboot, whose own chosen entry must survive.
    assert "chosen" not in text

    parts = parse_partitions(text)
    quirks = overlay.quirks_for(layout)
    for name, part in layout.partitions.items():
        offset, size = parts[f"{name}_partition"]
        if name == "boot" and quirks.boot_reserved:
            # The ROM boot stage keeps the head of the TOML's boot partition.
            assert parts[quirks.boot_reserved_label] == (0, quirks.boot_reserved)
            assert (offset, size) == (quirks.boot_reserved, part.size - quirks.boot_reserved)
        else:
            assert (offset, size) == (part.offset, part.size), name
    for alias in quirks.slot0_aliases:
        assert parts[alias] == (layout.slot0.offset, layout.slot0.size)
    expected_labels = {f"{name}_partition" for name in layout.partitions}
    expected_labels |= set(quirks.slot0_aliases)
    expected_labels |= {quirks.boot_reserved_label} if quirks.boot_reserved else set()
    assert set(parts) == expected_labels


def test_rp2040_keeps_the_second_stage_bootloader() -> None:
    text = overlay.render(load_board("rp2040"), "rp2040")
    assert "second_stage_bootloader: partition@0 {" in text
    assert "reg = <0x0 0x100>;\n\t\t\tread-only;" in text
    assert "boot_partition: partition@100 {" in text
    assert "slot0_partition: code_partition: partition@" in text


def test_render_is_deterministic_and_names_its_source() -> None:
    layout = load_board("nrf52840")
    first = overlay.render(layout, "nrf52840")
    assert first == overlay.render(load_board("nrf52840"), "nrf52840")
    assert "bootloader/boards/nrf52840.toml by `just overlays`; do not edit" in first


def test_check_and_write_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert overlay.main(["--check", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.count("stale:") == 3
    assert overlay.main(["--write", "--dir", str(tmp_path)]) == 0
    assert overlay.main(["--check", "--dir", str(tmp_path)]) == 0
    # A hand edit and a leftover generated file are both stale; --write repairs both.
    target = tmp_path / "native_sim.overlay"
    target.write_text(target.read_text().replace("0x4000", "0x5000"))
    orphan = tmp_path / "gone_board.overlay"
    orphan.write_text(f"/* Generated from bootloader/boards/gone.toml {overlay.GENERATED_MARK} */")
    keep = tmp_path / "hand_written.overlay"
    keep.write_text("/ { };\n")
    capsys.readouterr()
    assert overlay.main(["--check", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "native_sim.overlay" in out and "gone_board.overlay" in out
    assert "hand_written.overlay" not in out
    assert overlay.main(["--write", "--dir", str(tmp_path)]) == 0
    assert not orphan.exists() and keep.exists()
    assert overlay.main(["--check", "--dir", str(tmp_path)]) == 0


def test_board_option_prints_one_overlay(capsys: pytest.CaptureFixture[str]) -> None:
    assert overlay.main(["--board", "native_sim"]) == 0
    assert capsys.readouterr().out == overlay.render(load_board("native_sim"), "native_sim")
    assert overlay.main(["--board", "tiny"]) == 2
