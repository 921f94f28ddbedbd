"""Zephyr devicetree overlays generated from the board layout TOMLs.

Every board in ``bootloader/boards`` with a ``zephyr_board`` gets one overlay in
``bootloader/zephyr/boards/``, named after the Zephyr board target with ``/`` replaced by
``_`` (``nrf52840dk/nrf52840`` -> ``nrf52840dk_nrf52840.overlay``), which is the name Zephyr
itself looks for in an application's ``boards/`` directory.

The overlay deletes the board's own ``partitions`` node and redefines it from the layout,
with the node labels MCUboot and the MCUmgr image group look up (``boot_partition``,
``slot0_partition``, ``slot1_partition``, ``storage_partition``, ...).

It deliberately sets no ``chosen`` node: the same file is given to the application *and* to
the MCUboot image, and extra overlays are applied after MCUboot's own ``app.overlay`` (which
chooses ``zephyr,code-partition = &boot_partition``), so a chosen ``slot0_partition`` here
would link MCUboot into slot0. The application keeps the board's own chosen entry instead;
where that entry names a label the overlay deletes (``code_partition`` on the Raspberry Pi
Pico), slot0 carries that label too.

Usage::

    python -m bootloader.overlay --write          # regenerate bootloader/zephyr/boards/
    python -m bootloader.overlay --check          # exit 1 and list stale or missing files
    python -m bootloader.overlay --board rp2040   # print one overlay
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bootloader.formats.layout import BOARDS_DIR, Layout, LayoutError, board_names, load_board
from fota_common.cli import OneLineParser, run

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
OVERLAY_DIR: Final = Path(__file__).resolve().parent / "zephyr" / "boards"
GENERATED_MARK: Final = "by `just overlays`; do not edit"

# The ``label`` property Zephyr's own board files give these partitions.
PARTITION_LABELS: Final = {
    "boot": "mcuboot",
    "slot0": "image-0",
    "slot1": "image-1",
    "scratch": "image-scratch",
    "storage": "storage",
}

_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class BoardQuirks:
    """What differs between Zephyr boards when their partitions are replaced."""

    # Node label of the flash the partitions live in.
    flash_label: str = "flash0"
    # Bytes at the start of the boot partition that belong to a ROM boot stage, kept as
    # their own read-only partition ahead of MCUboot.
    boot_reserved: int = 0
    boot_reserved_label: str = ""
    # Extra labels for slot0: labels the board's own chosen node points at.
    slot0_aliases: tuple[str, ...] = ()


# Keyed by the board name, the part of the Zephyr board target before the first "/".
QUIRKS: Final[dict[str, BoardQuirks]] = {
    # boards/native/native_sim/native_sim.dts: "flash0: flash@0" under "zephyr,sim-flash".
    "native_sim": BoardQuirks(),
    # dts/arm/nordic/nrf52840.dtsi: "flash0: flash@0" under the NVMC flash controller.
    "nrf52840dk": BoardQuirks(),
    # boards/raspberrypi/rpi_pico/rpi_pico-common.dtsi: partitions of &flash0 start with
    # "second_stage_bootloader" (0x0 + 0x100, read-only) and chosen
    # zephyr,code-partition = &code_partition; dts/vendor/raspberrypi/
    # partitions_2M_sysbuild.dtsi likewise starts MCUboot at 0x100.
    "rpi_pico": BoardQuirks(
        boot_reserved=0x100,
        boot_reserved_label="second_stage_bootloader",
        slot0_aliases=("code_partition",),
    ),
}


@dataclass(frozen=True)
class Node:
    """One partition node as written to the overlay."""

    labels: tuple[str, ...]
    label_prop: str
    offset: int
    size: int
    read_only: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.size


def quirks_for(layout: Layout) -> BoardQuirks:
    return QUIRKS.get(layout.zephyr_board.split("/", 1)[0], BoardQuirks())


def overlay_filename(layout: Layout) -> str:
    """The Zephyr name for a board overlay: the board target with "/" turned into "_"."""
    if not layout.zephyr_board:
        raise ValueError(f"board {layout.name} has no zephyr_board")
    return layout.zephyr_board.replace("/", "_") + ".overlay"


def overlay_nodes(layout: Layout) -> list[Node]:
    """The partition nodes for a layout, in flash order."""
    quirks = quirks_for(layout)
    nodes: list[Node] = []
    for part in sorted(layout.partitions.values(), key=lambda p: p.offset):
        if not _NAME_RE.match(part.name):
            raise ValueError(f"board {layout.name}: partition name {part.name!r} is not a DT label")
        labels: tuple[str, ...] = (f"{part.name}_partition",)
        if part.name == "slot0":
            labels += quirks.slot0_aliases
        label_prop = PARTITION_LABELS.get(part.name, part.name.replace("_", "-"))
        offset, size = part.offset, part.size
        if part.name == "boot" and quirks.boot_reserved:
            if part.offset != 0 or part.size <= quirks.boot_reserved:
                raise ValueError(
                    f"board {layout.name}: boot partition must start at 0 and be larger than "
                    f"the {quirks.boot_reserved:#x}-byte {quirks.boot_reserved_label}"
                )
            reserved = quirks.boot_reserved_label
            nodes.append(Node((reserved,), reserved, 0, quirks.boot_reserved, read_only=True))
            offset, size = quirks.boot_reserved, part.size - quirks.boot_reserved
        nodes.append(Node(labels, label_prop, offset, size))
    return nodes


def _mib(value: int) -> str:
    if value % (1 << 20) == 0:
        return f"{value >> 20} MiB"
    return f"{value >> 10} KiB" if value % 1024 == 0 else f"{value} bytes"


def render(layout: Layout, source: str) -> str:
    """The overlay text for a layout; ``source`` is the TOML's file name stem."""
    quirks = quirks_for(layout)
    flash = quirks.flash_label
    lines = [
        "/*",
        f" * Generated from bootloader/boards/{source}.toml {GENERATED_MARK}.",
        f" * Zephyr board: {layout.zephyr_board}",
        f" * Flash: {_mib(layout.flash_size)}, {_mib(layout.sector_size)} erase sectors, "
        f"{layout.write_size}-byte writes, erased value {layout.erased_val:#04x}.",
        f" * MCUboot: {layout.mode}, largest image {layout.max_image_size():#x} bytes.",
        " *",
        " * Use it for both images: -DEXTRA_DTC_OVERLAY_FILE=<this file> for the application and",
        " * -Dmcuboot_EXTRA_DTC_OVERLAY_FILE=<this file> for MCUboot (see ../README.md).",
        " */",
        "",
        f"&{flash} {{",
        "\t/delete-node/ partitions;",
        "};",
        "",
        f"&{flash} {{",
        "\tpartitions {",
        '\t\tcompatible = "fixed-partitions";',
        "\t\t#address-cells = <1>;",
        "\t\t#size-cells = <1>;",
    ]
    for node in overlay_nodes(layout):
        labels = "".join(f"{label}: " for label in node.labels)
        lines += [
            "",
            f"\t\t{labels}partition@{node.offset:x} {{",
            f'\t\t\tlabel = "{node.label_prop}";',
            f"\t\t\treg = <{node.offset:#x} {node.size:#x}>;",
        ]
        if node.read_only:
            lines.append("\t\t\tread-only;")
        lines.append("\t\t};")
    lines += ["\t};", "};", ""]
    return "\n".join(lines)


def zephyr_boards() -> list[tuple[str, Layout]]:
    """(TOML stem, layout) for every board that names a Zephyr board target."""
    boards = [(name, load_board(BOARDS_DIR / f"{name}.toml")) for name in board_names()]
    return [(name, layout) for name, layout in boards if layout.zephyr_board]


def expected_overlays(out_dir: Path = OVERLAY_DIR) -> dict[Path, str]:
    """Every overlay path under ``out_dir`` with the text it should have."""
    expected: dict[Path, str] = {}
    for name, layout in zephyr_boards():
        path = out_dir / overlay_filename(layout)
        if path in expected:
            raise ValueError(f"two boards map to the same overlay {path.name}")
        expected[path] = render(layout, name)
    return expected


def _generated_files(out_dir: Path) -> list[Path]:
    if not out_dir.is_dir():
        return []
    return sorted(
        p for p in out_dir.glob("*.overlay") if GENERATED_MARK in p.read_text(errors="replace")
    )


def stale_overlays(out_dir: Path = OVERLAY_DIR) -> list[Path]:
    """Overlays that are missing, differ from the TOMLs, or belong to no board any more."""
    expected = expected_overlays(out_dir)
    stale = [
        path for path, text in expected.items() if not path.is_file() or path.read_text() != text
    ]
    stale += [path for path in _generated_files(out_dir) if path not in expected]
    return sorted(stale)


def write_overlays(out_dir: Path = OVERLAY_DIR) -> list[Path]:
    """Write every overlay, remove generated ones without a board; return what changed."""
    changed = stale_overlays(out_dir)
    expected = expected_overlays(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, text in expected.items():
        if path in changed:
            path.write_text(text)
    for path in changed:
        if path not in expected:
            path.unlink()
    return changed


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run under the one CLI runner: every error is one line and exit 2."""
    return run("overlay", lambda: _main(argv))


def _main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m bootloader.overlay",
        description="Generate the Zephyr devicetree overlays from bootloader/boards/*.toml.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="(re)write every overlay")
    action.add_argument(
        "--check", action="store_true", help="exit 1 listing overlays that are out of date"
    )
    action.add_argument("--board", metavar="NAME", help="print the overlay of one board")
    parser.add_argument(
        "--dir", type=Path, default=OVERLAY_DIR, help="overlay directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    out_dir: Path = args.dir

    if args.board is not None:
        try:
            layout = load_board(args.board)
        except LayoutError as exc:
            print(f"overlay: error: {exc}", file=sys.stderr)
            return 2
        if not layout.zephyr_board:
            print(f"board {layout.name} has no zephyr_board", file=sys.stderr)
            return 2
        sys.stdout.write(render(layout, Path(str(args.board)).stem))
        return 0
    if args.write:
        try:
            if out_dir.exists() and not out_dir.is_dir():
                raise NotADirectoryError(20, "it is not a directory")
            changed = write_overlays(out_dir)
        except OSError as exc:
            print(
                f"overlay: error: cannot write into --dir {out_dir}: {exc.strerror}",
                file=sys.stderr,
            )
            return 2
        for path in changed:
            print(f"{'removed' if not path.exists() else 'wrote'} {_show(path)}")
        return 0
    stale = stale_overlays(out_dir)
    for path in stale:
        print(f"stale: {_show(path)}")
    if stale:
        print("run `just overlays` (python -m bootloader.overlay --write)", file=sys.stderr)
        return 1
    print(f"{len(expected_overlays(out_dir))} overlays up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
