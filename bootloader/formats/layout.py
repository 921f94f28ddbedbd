"""Board flash layouts: one TOML per board, the single source of truth.

The simulator, the virtual MCU, imgtool's signing parameters and the Zephyr devicetree
overlays are all derived from these files, so a layout is validated as strictly as
MCUboot itself would treat the partitions (see ``boot_slots_compatible`` and
``app_max_size`` in MCUboot's ``swap_move.c``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Final

from fota_common.errors import LayoutError as LayoutError  # re-exported
from mcu import mcuboot as mb

BOARDS_DIR: Final = Path(__file__).resolve().parent.parent / "boards"
MODES: Final = ("swap-move", "overwrite-only")
TMPBUF_SZ: Final = 256  # MCUboot copies regions through a 256-byte buffer (BOOT_TMPBUF_SZ)


@dataclass(frozen=True)
class Partition:
    name: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


def align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def align_down(value: int, align: int) -> int:
    return value // align * align


@dataclass(frozen=True)
class Layout:
    """A board's flash geometry and MCUboot configuration."""

    name: str
    description: str
    flash_size: int
    sector_size: int
    write_size: int
    erased_val: int
    mode: str
    max_align: int
    max_sectors: int
    header_size: int
    partitions: dict[str, Partition]
    zephyr_board: str = ""
    program_page_size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def slot0(self) -> Partition:
        return self.partitions["slot0"]

    @property
    def slot1(self) -> Partition:
        return self.partitions["slot1"]

    @property
    def overwrite_only(self) -> bool:
        return self.mode == "overwrite-only"

    def trailer_size(self) -> int:
        """Bytes of MCUboot trailer at the end of a slot (``boot_trailer_sz``), any mode."""
        return mb.trailer_sz(self.write_size, self.max_align, self.max_sectors)

    def trailer_sectors(self) -> int:
        return -(-self.trailer_size() // self.sector_size)

    def max_image_size(self) -> int:
        """Largest image (header + body + TLVs) MCUboot accepts (``bootutil_max_image_size``).

        The one formula the receiver, direct mode and the bridge also use
        (:func:`mcu.mcuboot.max_image_size`).
        """
        return mb.max_image_size(
            self.mode,
            self.slot0.size,
            self.slot1.size,
            self.sector_size,
            self.trailer_size(),
            self.max_align,
        )

    def imgtool_args(self) -> list[str]:
        """The imgtool sign options that make an image fit this board."""
        args = [
            "--header-size",
            hex(self.header_size),
            "--align",
            str(self.write_size),
            "--max-align",
            str(self.max_align),
            "--slot-size",
            hex(self.slot1.size),
            "--max-sectors",
            str(self.max_sectors),
        ]
        if self.overwrite_only:
            args.append("--overwrite-only")
        return args


def _int(table: dict[str, Any], key: str, where: str) -> int:
    if key not in table:
        raise LayoutError(f"{where}: missing '{key}'")
    value = table[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LayoutError(f"{where}: '{key}' must be a non-negative integer, got {value!r}")
    return value


def _pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def parse_layout(data: dict[str, Any], source: str = "layout") -> Layout:
    """Build and validate a layout from parsed TOML; raise LayoutError with the reason."""
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise LayoutError(f"{source}: missing 'name'")
    where = f"board {name}"
    flash = data.get("flash")
    boot = data.get("mcuboot")
    parts = data.get("partitions")
    if not isinstance(flash, dict):
        raise LayoutError(f"{where}: missing [flash] table")
    if not isinstance(boot, dict):
        raise LayoutError(f"{where}: missing [mcuboot] table")
    if not isinstance(parts, dict):
        raise LayoutError(f"{where}: missing [partitions] table")
    partitions: dict[str, Partition] = {}
    for pname, ptable in parts.items():
        if not isinstance(ptable, dict):
            raise LayoutError(f"{where}: partition {pname} must be a table")
        pw = f"{where} partition {pname}"
        partitions[pname] = Partition(pname, _int(ptable, "offset", pw), _int(ptable, "size", pw))
    mode = boot.get("mode", "swap-move")
    layout = Layout(
        name=name,
        description=str(data.get("description", "")),
        flash_size=_int(flash, "size", where),
        sector_size=_int(flash, "sector_size", where),
        write_size=_int(flash, "write_block_size", where),
        erased_val=_int(flash, "erased_value", where) if "erased_value" in flash else 0xFF,
        mode=str(mode),
        max_align=_int(boot, "max_align", where) if "max_align" in boot else 8,
        max_sectors=_int(boot, "max_sectors", where) if "max_sectors" in boot else 128,
        header_size=_int(boot, "header_size", where) if "header_size" in boot else 0x200,
        partitions=partitions,
        zephyr_board=str(data.get("zephyr_board", "")),
        program_page_size=(
            _int(flash, "program_page_size", where) if "program_page_size" in flash else 0
        ),
    )
    validate(layout)
    return layout


def validate(lay: Layout) -> None:
    """Refuse layouts MCUboot could not work with, naming the first problem found."""
    w = f"board {lay.name}"
    if lay.mode not in MODES:
        raise LayoutError(f"{w}: unknown MCUboot mode '{lay.mode}' (known: {', '.join(MODES)})")
    if not _pow2(lay.sector_size):
        raise LayoutError(f"{w}: sector_size {lay.sector_size} is not a power of two")
    if not _pow2(lay.write_size) or lay.write_size > 32:
        raise LayoutError(f"{w}: write_block_size {lay.write_size} must be a power of two <= 32")
    if lay.max_align not in (8, 16, 32):
        raise LayoutError(f"{w}: max_align {lay.max_align} must be 8, 16 or 32")
    if lay.write_size > lay.max_align:
        raise LayoutError(
            f"{w}: write_block_size {lay.write_size} exceeds max_align {lay.max_align}"
        )
    if lay.erased_val not in (0x00, 0xFF):
        raise LayoutError(f"{w}: erased_value must be 0xff or 0x00")
    if lay.flash_size == 0 or lay.flash_size % lay.sector_size:
        raise LayoutError(
            f"{w}: flash size {lay.flash_size:#x} is not a multiple of the sector size"
        )
    if lay.header_size < 32 or lay.header_size % 4:
        raise LayoutError(f"{w}: header_size {lay.header_size:#x} must be >= 32 and 4-aligned")
    for required in ("boot", "slot0", "slot1"):
        if required not in lay.partitions:
            raise LayoutError(f"{w}: missing partition '{required}'")
    ordered = sorted(lay.partitions.values(), key=lambda p: p.offset)
    for part in ordered:
        if part.size == 0:
            raise LayoutError(f"{w}: partition {part.name} is empty")
        if part.offset % lay.sector_size or part.size % lay.sector_size:
            raise LayoutError(
                f"{w}: partition {part.name} ({part.offset:#x}+{part.size:#x}) is not aligned "
                f"to the {lay.sector_size:#x}-byte sector"
            )
        if part.end > lay.flash_size:
            raise LayoutError(
                f"{w}: partition {part.name} ends at {part.end:#x}, past the end of the "
                f"{lay.flash_size:#x}-byte flash"
            )
    for a, b in pairwise(ordered):
        if b.offset < a.end:
            raise LayoutError(f"{w}: partitions {a.name} and {b.name} overlap at {b.offset:#x}")
    s0 = lay.slot0.size // lay.sector_size
    s1 = lay.slot1.size // lay.sector_size
    if max(s0, s1) > lay.max_sectors:
        raise LayoutError(
            f"{w}: a slot has {max(s0, s1)} sectors but max_sectors is {lay.max_sectors}"
        )
    if lay.mode == "swap-move" and s0 not in (s1, s1 + 1):
        raise LayoutError(
            f"{w}: swap-move needs slot0 to have slot1's sector count plus one "
            f"(slot0 {s0}, slot1 {s1})"
        )
    if lay.mode == "overwrite-only" and s1 > s0:
        raise LayoutError(f"{w}: slot1 ({s1} sectors) is larger than slot0 ({s0} sectors)")
    if lay.max_image_size() < lay.header_size + lay.sector_size:
        raise LayoutError(
            f"{w}: slots too small for the {lay.trailer_size()}-byte MCUboot trailer "
            f"(room left for an image: {max(lay.max_image_size(), 0)} bytes)"
        )


def load_layout(path: str | Path) -> Layout:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise LayoutError(f"cannot read layout {p}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise LayoutError(f"layout {p} is not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise LayoutError(f"layout {p} is not valid TOML: {exc}") from exc
    return parse_layout(data, str(p))


def board_names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


def load_board(name_or_path: str | Path) -> Layout:
    """Load a board by name (``nrf52840``) or by the path of a layout TOML."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text:
        return load_layout(text)
    path = BOARDS_DIR / f"{text}.toml"
    if not path.exists():
        raise LayoutError(f"unknown board '{text}' (known: {', '.join(board_names())})")
    return load_layout(path)
