"""The Kconfig fragments in bootloader/zephyr.

* every Kconfig symbol in the .conf files is one checked against upstream (the allowlist
  below names the file that defines it) and the files use no other;
* the MCUboot sector count, imgtool's trailer and the layouts agree;
* each fragment enables what its build needs, and the README names every file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from zephyr_kit import ZEPHYR_DIR

from bootloader import overlay

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
