"""The Zephyr/MCUboot configuration in bootloader/zephyr and the layouts it is built from.

* the committed devicetree overlays are exactly what bootloader.overlay makes of the TOMLs,
  and every partition in them has the TOML's offset and size;
* every Kconfig symbol in the .conf files is one checked against upstream (the allowlist
  below names the file that defines it) and the files use no other;
* the MCUboot sector count, imgtool's trailer and the layouts agree;
* broken layouts are refused with a reason that names the problem.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from bootloader import overlay
from bootloader.formats.layout import LayoutError, load_board, parse_layout

ZEPHYR_DIR = Path(overlay.__file__).resolve().parent / "zephyr"
CONF_FILES = sorted(ZEPHYR_DIR.rglob("*.conf"))

# Every symbol the .conf files may name, with the upstream file that defines it.
# "zephyr:" is zephyrproject-rtos/zephyr, "mcuboot:" is mcu-tools/mcuboot.
KCONFIG_ALLOWLIST: dict[str, str] = {
    # Sysbuild (sysbuild.conf).
    "SB_CONFIG_BOOTLOADER_MCUBOOT": "zephyr:share/sysbuild/images/bootloader/Kconfig",
    "SB_CONFIG_MCUBOOT_MODE_SWAP_USING_MOVE": "zephyr:share/sysbuild/images/bootloader/Kconfig",
    "SB_CONFIG_BOOT_SIGNATURE_TYPE_ECDSA_P256": "zephyr:share/sysbuild/images/bootloader/Kconfig",
    "SB_CONFIG_BOOT_SIGNATURE_KEY_FILE": "zephyr:share/sysbuild/images/bootloader/Kconfig",
    # The MCUboot image (sysbuild/mcuboot.conf).
    "CONFIG_BOOT_SWAP_USING_MOVE": "mcuboot:boot/zephyr/Kconfig",
    "CONFIG_BOOT_SIGNATURE_TYPE_ECDSA_P256": "mcuboot:boot/zephyr/Kconfig",
    "CONFIG_BOOT_SIGNATURE_KEY_FILE": "mcuboot:boot/zephyr/Kconfig",
    "CONFIG_BOOT_MAX_IMG_SECTORS_AUTO": "mcuboot:boot/zephyr/Kconfig",
    "CONFIG_BOOT_MAX_IMG_SECTORS": "mcuboot:boot/zephyr/Kconfig",
    "CONFIG_BOOT_VALIDATE_SLOT0": "mcuboot:boot/zephyr/Kconfig",
    # The application: MCUboot chain-loading.
    "CONFIG_BOOTLOADER_MCUBOOT": "zephyr:modules/Kconfig.mcuboot",
    "CONFIG_MCUBOOT_BOOTLOADER_MODE_SWAP_USING_MOVE": "zephyr:modules/Kconfig.mcuboot",
    # MCUmgr core and its libraries.
    "CONFIG_MCUMGR": "zephyr:subsys/mgmt/mcumgr/Kconfig",
    "CONFIG_NET_BUF": "zephyr:lib/net_buf/Kconfig",
    "CONFIG_ZCBOR": "zephyr:modules/zcbor/Kconfig",
    "CONFIG_BASE64": "zephyr:lib/utils/Kconfig",
    "CONFIG_CRC": "zephyr:lib/crc/Kconfig",
    # Transports.
    "CONFIG_MCUMGR_TRANSPORT_UART": "zephyr:subsys/mgmt/mcumgr/transport/Kconfig.uart",
    "CONFIG_MCUMGR_TRANSPORT_RAW_UART": "zephyr:subsys/mgmt/mcumgr/transport/Kconfig.raw_uart",
    "CONFIG_MCUMGR_TRANSPORT_RAW_UART_INPUT_TIMEOUT": (
        "zephyr:subsys/mgmt/mcumgr/transport/Kconfig.raw_uart"
    ),
    "CONFIG_MCUMGR_TRANSPORT_RAW_UART_INPUT_TIMEOUT_TIME_MS": (
        "zephyr:subsys/mgmt/mcumgr/transport/Kconfig.raw_uart"
    ),
    "CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE": "zephyr:subsys/mgmt/mcumgr/transport/Kconfig",
    "CONFIG_MCUMGR_TRANSPORT_NETBUF_COUNT": "zephyr:subsys/mgmt/mcumgr/transport/Kconfig",
    # Console and the MCUmgr UART driver. UART_MCUMGR_RAW_PROTOCOL is listed among the new
    # options in doc/releases/release-notes-4.4.rst and is a dependency of
    # MCUMGR_TRANSPORT_RAW_UART in Kconfig.raw_uart; the driver options sit with it.
    "CONFIG_CONSOLE": "zephyr:drivers/console/Kconfig",
    "CONFIG_UART_CONSOLE": "zephyr:drivers/console/Kconfig",
    "CONFIG_UART_MCUMGR": "zephyr:drivers/console/Kconfig",
    "CONFIG_UART_MCUMGR_RX_BUF_SIZE": "zephyr:drivers/console/Kconfig",
    "CONFIG_UART_MCUMGR_RX_BUF_COUNT": "zephyr:drivers/console/Kconfig",
    "CONFIG_UART_MCUMGR_RAW_PROTOCOL": "zephyr:drivers/console/Kconfig",
    "CONFIG_LOG": "zephyr:subsys/logging/Kconfig",
    # Command groups.
    "CONFIG_MCUMGR_GRP_IMG": "zephyr:subsys/mgmt/mcumgr/grp/img_mgmt/Kconfig",
    "CONFIG_MCUMGR_GRP_IMG_ALLOW_ERASE_PENDING": "zephyr:subsys/mgmt/mcumgr/grp/img_mgmt/Kconfig",
    "CONFIG_MCUMGR_GRP_OS": "zephyr:subsys/mgmt/mcumgr/grp/os_mgmt/Kconfig",
    "CONFIG_MCUMGR_GRP_OS_MCUMGR_PARAMS": "zephyr:subsys/mgmt/mcumgr/grp/os_mgmt/Kconfig",
    "CONFIG_MCUMGR_GRP_OS_BOOTLOADER_INFO": "zephyr:subsys/mgmt/mcumgr/grp/os_mgmt/Kconfig",
    # Flash and the DFU image manager.
    "CONFIG_FLASH": "zephyr:drivers/flash/Kconfig",
    "CONFIG_FLASH_MAP": "zephyr:subsys/storage/flash_map/Kconfig",
    "CONFIG_STREAM_FLASH": "zephyr:subsys/storage/stream/Kconfig",
    "CONFIG_IMG_MANAGER": "zephyr:subsys/dfu/Kconfig",
    "CONFIG_MCUBOOT_IMG_MANAGER": "zephyr:subsys/dfu/Kconfig",
    "CONFIG_IMG_ERASE_PROGRESSIVELY": "zephyr:subsys/dfu/Kconfig",
}

SYMBOL_RE = re.compile(r"\b(?:SB_)?CONFIG_[A-Z0-9_]+\b")
ASSIGN_RE = re.compile(
    r'^((?:SB_)?CONFIG_[A-Z0-9_]+)=(y|n|-?\d+|0x[0-9a-fA-F]+|"(?:[^"\\]|\\.)*")$'
)


def read_conf(path: Path) -> dict[str, str]:
    """The assignments of a Kconfig fragment; fails on lines that are not one."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = ASSIGN_RE.match(line)
        assert match, f"{path.name}:{number}: not a Kconfig assignment: {raw!r}"
        name, value = match.groups()
        assert name not in values, f"{path.name}:{number}: {name} assigned twice"
        values[name] = value
    return values


def conf(name: str) -> dict[str, str]:
    return read_conf(ZEPHYR_DIR / name)


# --- Kconfig fragments --------------------------------------------------------------------


def test_the_expected_fragments_exist() -> None:
    names = {p.relative_to(ZEPHYR_DIR).as_posix() for p in CONF_FILES}
    assert names == {
        "sysbuild.conf",
        "sysbuild/mcuboot.conf",
        "app-mcumgr-uart.conf",
        "app-mcumgr-raw-uart.conf",
        "app-confirm.conf",
    }


@pytest.mark.parametrize("path", CONF_FILES, ids=lambda p: p.name)
def test_every_symbol_is_on_the_allowlist(path: Path) -> None:
    # Comments count too: a symbol named in an explanation must exist as well.
    unknown = sorted(set(SYMBOL_RE.findall(path.read_text())) - set(KCONFIG_ALLOWLIST))
    assert not unknown, f"{path.name} uses symbols not checked upstream: {unknown}"


@pytest.mark.parametrize("path", CONF_FILES, ids=lambda p: p.name)
def test_fragments_assign_in_their_own_namespace(path: Path) -> None:
    values = read_conf(path)
    assert values, f"{path.name} assigns nothing"
    sysbuild = path.name == "sysbuild.conf"
    for name in values:
        assert name.startswith("SB_CONFIG_") == sysbuild, f"{path.name}: {name}"


def test_sysbuild_selects_mcuboot_swap_move_and_ecdsa() -> None:
    values = conf("sysbuild.conf")
    assert values["SB_CONFIG_BOOTLOADER_MCUBOOT"] == "y"
    assert values["SB_CONFIG_MCUBOOT_MODE_SWAP_USING_MOVE"] == "y"
    assert values["SB_CONFIG_BOOT_SIGNATURE_TYPE_ECDSA_P256"] == "y"
    # Relative to the application, through the APP_DIR the build expands.
    assert values["SB_CONFIG_BOOT_SIGNATURE_KEY_FILE"].startswith('"\\${APP_DIR}/')


def test_mcuboot_matches_sysbuild_and_leaves_the_key_to_it() -> None:
    values = conf("sysbuild/mcuboot.conf")
    assert values["CONFIG_BOOT_SWAP_USING_MOVE"] == "y"
    assert values["CONFIG_BOOT_SIGNATURE_TYPE_ECDSA_P256"] == "y"
    assert values["CONFIG_BOOT_VALIDATE_SLOT0"] == "y"
    # Sysbuild overrides the image's key with SB_CONFIG_BOOT_SIGNATURE_KEY_FILE.
    assert "CONFIG_BOOT_SIGNATURE_KEY_FILE" not in values


def test_mcuboot_sector_count_matches_every_zephyr_layout() -> None:
    # MCUboot sizes the swap status area from BOOT_MAX_IMG_SECTORS and imgtool from
    # --max-sectors (Layout.imgtool_args); they must agree or the trailers differ.
    values = conf("sysbuild/mcuboot.conf")
    assert values["CONFIG_BOOT_MAX_IMG_SECTORS_AUTO"] == "n"
    sectors = int(values["CONFIG_BOOT_MAX_IMG_SECTORS"])
    for _, layout in overlay.zephyr_boards():
        assert layout.max_sectors == sectors, layout.name
        args = layout.imgtool_args()
        assert args[args.index("--max-sectors") + 1] == str(sectors)
        for slot in (layout.slot0, layout.slot1):
            assert slot.size // layout.sector_size <= sectors, (layout.name, slot.name)


@pytest.mark.parametrize("name", ["app-mcumgr-uart.conf", "app-mcumgr-raw-uart.conf"])
def test_mcumgr_fragments_enable_upload_over_uart(name: str) -> None:
    values = conf(name)
    for symbol in (
        "CONFIG_MCUMGR",
        "CONFIG_NET_BUF",
        "CONFIG_ZCBOR",
        "CONFIG_CONSOLE",
        "CONFIG_MCUMGR_GRP_IMG",
        "CONFIG_MCUMGR_GRP_OS",
        "CONFIG_MCUMGR_GRP_OS_MCUMGR_PARAMS",
        "CONFIG_FLASH",
        "CONFIG_FLASH_MAP",
        "CONFIG_STREAM_FLASH",
        "CONFIG_IMG_MANAGER",
        "CONFIG_IMG_ERASE_PROGRESSIVELY",
    ):
        assert values.get(symbol) == "y", f"{name}: {symbol}"
    assert int(values["CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE"]) == 2475
    assert int(values["CONFIG_MCUMGR_TRANSPORT_NETBUF_COUNT"]) == 4


def test_console_framed_uart_fragment() -> None:
    values = conf("app-mcumgr-uart.conf")
    # MCUMGR_TRANSPORT_UART depends on BASE64 and CRC (Kconfig.uart).
    for symbol in ("CONFIG_MCUMGR_TRANSPORT_UART", "CONFIG_BASE64", "CONFIG_CRC"):
        assert values[symbol] == "y"
    assert "CONFIG_MCUMGR_TRANSPORT_RAW_UART" not in values
    # One receive buffer holds one frame line of up to MCUMGR_SERIAL_MAX_FRAME = 127 bytes.
    assert int(values["CONFIG_UART_MCUMGR_RX_BUF_SIZE"]) >= 127
    assert int(values["CONFIG_UART_MCUMGR_RX_BUF_COUNT"]) >= 2


def test_raw_uart_fragment() -> None:
    values = conf("app-mcumgr-raw-uart.conf")
    # Kconfig.raw_uart: depends on CONSOLE, UART_MCUMGR and UART_MCUMGR_RAW_PROTOCOL.
    for symbol in (
        "CONFIG_UART_MCUMGR",
        "CONFIG_UART_MCUMGR_RAW_PROTOCOL",
        "CONFIG_MCUMGR_TRANSPORT_RAW_UART",
        "CONFIG_MCUMGR_TRANSPORT_RAW_UART_INPUT_TIMEOUT",
    ):
        assert values[symbol] == "y"
    assert "CONFIG_MCUMGR_TRANSPORT_UART" not in values
    # Nothing else may write to a raw UART.
    assert values["CONFIG_UART_CONSOLE"] == "n"
    assert values["CONFIG_LOG"] == "n"


def test_confirm_fragment_builds_the_mcuboot_image_manager() -> None:
    values = conf("app-confirm.conf")
    for symbol in (
        "CONFIG_BOOTLOADER_MCUBOOT",
        "CONFIG_IMG_MANAGER",
        "CONFIG_MCUBOOT_IMG_MANAGER",
        "CONFIG_FLASH_MAP",
        "CONFIG_STREAM_FLASH",
    ):
        assert values[symbol] == "y"


def test_readme_names_the_files_it_documents() -> None:
    text = (ZEPHYR_DIR / "README.md").read_text()
    for path in CONF_FILES:
        assert path.relative_to(ZEPHYR_DIR).as_posix() in text
    for path in overlay.expected_overlays():
        assert path.name in text
    assert "boot_write_img_confirmed()" in text
    assert "west build -b" in text and "--sysbuild" in text


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


# --- Upstream facts the two Zephyr-derived layouts rest on -----------------------------------


def test_native_sim_layout_follows_upstream() -> None:
    # zephyr boards/native/native_sim/native_sim.dts
    lay = load_board("native_sim")
    assert (lay.flash_size, lay.sector_size, lay.write_size, lay.erased_val) == (
        0x200000,
        4096,
        1,
        0xFF,
    )
    assert (lay.partitions["boot"].offset, lay.partitions["boot"].size) == (0x0, 0xC000)
    assert lay.slot0.offset == 0xC000
    assert lay.slot1.size == 0x69000
    assert (lay.partitions["storage"].offset, lay.partitions["storage"].size) == (0xFC000, 0x4000)
    assert lay.slot0.size == lay.slot1.size + lay.sector_size


def test_nrf52840_layout_follows_upstream() -> None:
    # zephyr dts/arm/nordic/nrf52840.dtsi, nrf52840_qiaa.dtsi, nrf52840_partition.dtsi
    lay = load_board("nrf52840")
    assert (lay.flash_size, lay.sector_size, lay.write_size, lay.erased_val) == (
        0x100000,
        4096,
        4,
        0xFF,
    )
    assert (lay.partitions["boot"].offset, lay.partitions["boot"].size) == (0x0, 0xC000)
    assert lay.slot0.offset == 0xC000
    assert lay.slot1.size == 0x76000
    assert lay.slot0.size == lay.slot1.size + lay.sector_size
    assert lay.partitions["storage"].end == lay.flash_size


# --- Layouts that must be refused ----------------------------------------------------------

GOOD: dict[str, Any] = {
    "name": "bad",
    "flash": {"size": 0x4000, "sector_size": 0x200, "write_block_size": 8, "erased_value": 0xFF},
    "mcuboot": {"mode": "swap-move", "max_align": 8, "max_sectors": 16, "header_size": 0x20},
    "partitions": {
        "boot": {"offset": 0x0, "size": 0x800},
        "slot0": {"offset": 0x800, "size": 0x1400},
        "slot1": {"offset": 0x1C00, "size": 0x1200},
    },
}


def variant(**changes: Any) -> dict[str, Any]:
    """GOOD with changes applied; ``flash__size=1`` sets data["flash"]["size"], None deletes."""
    data = copy.deepcopy(GOOD)
    for dotted, value in changes.items():
        *path, key = dotted.split("__")
        table = data
        for part in path:
            table = table[part]
        if value is None:
            del table[key]
        else:
            table[key] = value
    return data


BAD_LAYOUTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "overlap",
        variant(partitions__slot1={"offset": 0x1A00, "size": 0x1200}),
        "partitions slot0 and slot1 overlap at 0x1a00",
    ),
    (
        "misaligned offset",
        variant(partitions__slot1={"offset": 0x1C10, "size": 0x1200}),
        "partition slot1 (0x1c10+0x1200) is not aligned to the 0x200-byte sector",
    ),
    (
        "misaligned size",
        variant(partitions__boot={"offset": 0x0, "size": 0x7F0}),
        "partition boot (0x0+0x7f0) is not aligned",
    ),
    (
        "slot too small for the trailer",
        # 128 sectors x 3 status entries x 8 bytes: a 3 KiB trailer in 2.5 KiB slots.
        variant(
            mcuboot__max_sectors=128,
            partitions__slot0={"offset": 0x800, "size": 0xA00},
            partitions__slot1={"offset": 0x1200, "size": 0x800},
        ),
        "slots too small for the 3120-byte MCUboot trailer",
    ),
    (
        "swap-move slot count",
        variant(
            partitions__slot0={"offset": 0x800, "size": 0x1600},
            partitions__slot1={"offset": 0x1E00, "size": 0x1200},
        ),
        "swap-move needs slot0 to have slot1's sector count plus one (slot0 11, slot1 9)",
    ),
    (
        "slot1 larger than slot0",
        variant(partitions__slot1={"offset": 0x1C00, "size": 0x1600}),
        "swap-move needs slot0 to have slot1's sector count plus one (slot0 10, slot1 11)",
    ),
    (
        "write size not a power of two",
        variant(flash__write_block_size=3),
        "write_block_size 3 must be a power of two <= 32",
    ),
    (
        "write size above max_align",
        variant(flash__write_block_size=16),
        "write_block_size 16 exceeds max_align 8",
    ),
    (
        "write size too large",
        variant(flash__write_block_size=64),
        "write_block_size 64 must be a power of two <= 32",
    ),
    (
        "partition past the end of flash",
        variant(flash__size=0x2000),
        "partition slot1 ends at 0x2e00, past the end of the 0x2000-byte flash",
    ),
    (
        "more sectors than max_sectors",
        variant(mcuboot__max_sectors=8),
        "a slot has 10 sectors but max_sectors is 8",
    ),
    (
        "missing slot1",
        variant(partitions__slot1=None),
        "missing partition 'slot1'",
    ),
    (
        "sector size not a power of two",
        variant(flash__sector_size=0x300),
        "sector_size 768 is not a power of two",
    ),
    (
        "unknown mode",
        variant(mcuboot__mode="swap-scratch"),
        "unknown MCUboot mode 'swap-scratch'",
    ),
    (
        "bad erased value",
        variant(flash__erased_value=0x55),
        "erased_value must be 0xff or 0x00",
    ),
    (
        "negative offset",
        variant(partitions__slot1={"offset": -0x200, "size": 0x1200}),
        "'offset' must be a non-negative integer",
    ),
    (
        "overwrite-only slot1 larger than slot0",
        variant(
            mcuboot__mode="overwrite-only",
            partitions__slot0={"offset": 0x800, "size": 0x1200},
            partitions__slot1={"offset": 0x1A00, "size": 0x1400},
        ),
        "slot1 (10 sectors) is larger than slot0 (9 sectors)",
    ),
]


def test_the_base_layout_is_valid() -> None:
    layout = parse_layout(copy.deepcopy(GOOD))
    assert layout.max_image_size() > 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [pytest.param(data, reason, id=case) for case, data, reason in BAD_LAYOUTS],
)
def test_bad_layouts_are_refused_with_the_reason(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(LayoutError) as excinfo:
        parse_layout(data)
    message = str(excinfo.value)
    assert message.startswith("board bad"), message
    assert reason in message, message
