"""``fota-boot``: inspect MCUboot images and try MCUboot's behaviour offline.

Exit codes: 0 success; 1 the image would be rejected; 2 bad input or a fatal error;
3 the boot was stopped by ``--power-cut-at``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bootloader.formats.image import ImageError, describe, parse_image
from bootloader.formats.keys import load_public_key
from bootloader.formats.layout import Layout, board_names, load_board
from bootloader.formats.verify import verify_image
from bootloader.sim.flash import Flash, PowerCut
from bootloader.sim.model.boot import boot
from fota_common.cli import EXIT_NO, EXIT_OK, OneLineParser, int_at_least, run
from fota_common.errors import ConfigError
from mcu import mcuboot as mb

EXIT_REJECTED, EXIT_POWER_CUT = EXIT_NO, 3


def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def load_keys(paths: Sequence[str]) -> list[Any]:

    keys = []
    for p in paths:
        try:
            keys.append(load_public_key(read_file(p, "key")))
        except ValueError as exc:
            raise ConfigError(f"{p} is not a usable key: {exc}") from exc
    return keys


def _slot(layout: Layout, text: str) -> str:
    names = {"0": "slot0", "primary": "slot0", "slot0": "slot0"}
    names |= {"1": "slot1", "secondary": "slot1", "slot1": "slot1"}
    if text not in names:
        raise ConfigError(f"unknown slot '{text}': use 0 (primary) or 1 (secondary)")
    return names[text]


def _open_flash(args: argparse.Namespace) -> tuple[Layout, Flash]:
    if not args.board or not args.flash:
        raise ConfigError("this command needs --board BOARD and --flash FILE")
    layout = load_board(args.board)
    return layout, Flash.for_layout(layout, args.flash)


def cmd_boards(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for name in board_names():
        lay = load_board(name)
        rows.append(
            {
                "board": name,
                "mode": lay.mode,
                "flash": lay.flash_size,
                "sector": lay.sector_size,
                "write": lay.write_size,
                "slot0": [lay.slot0.offset, lay.slot0.size],
                "slot1": [lay.slot1.offset, lay.slot1.size],
                "max_image": lay.max_image_size(),
                "description": lay.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        print(
            f"{r['board']:<16} {r['mode']:<15} slot0 {r['slot0'][0]:#09x}+{r['slot0'][1]:#x}  "
            f"slot1 {r['slot1'][0]:#09x}+{r['slot1'][1]:#x}  max image {r['max_image']} B"
        )
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:

    data = read_file(args.image, "image")
    keys = load_keys(args.key or [])
    try:
        image = parse_image(data)
    except ImageError as exc:
        if args.json:
            print(json.dumps({"ok": False, "reason": str(exc)}))
        else:
            print(f"{args.image}: rejected: {exc}")
        return EXIT_REJECTED
    result = verify_image(image, keys)
    info: dict[str, Any] = dict(describe(image))
    info["ok"] = bool(result.ok)
    info["hash_ok"] = bool(result.hash_ok)
    info["signature"] = result.signature
    info["reason"] = result.reason
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"{args.image}: version {info.get('version')}, {len(data)} bytes")
        for key in ("hdr_size", "img_size", "load_addr", "flags"):
            if key in info:
                print(f"  {key:<10} {info[key]}")
        for tlv in info.get("tlvs", []):
            print(f"  TLV {tlv.get('name', tlv.get('type'))}: {str(tlv.get('value', ''))[:64]}")
        print(f"  hash       {'ok' if result.hash_ok else 'BAD'}")
        print(f"  signature  {result.signature}")
        print(f"  verdict    {'accepted' if result.ok else 'rejected: ' + str(result.reason)}")
    return EXIT_OK if result.ok else EXIT_REJECTED


def cmd_load(args: argparse.Namespace) -> int:
    layout, flash = _open_flash(args)
    part = layout.partitions[_slot(layout, args.slot)]
    data = read_file(args.image, "image")
    limit = part.size - layout.trailer_sectors() * layout.sector_size
    if len(data) > limit:
        raise ConfigError(f"image is {len(data)} bytes but {part.name} holds at most {limit}")
    with flash:
        area = flash.area(part)
        area.erase(0, part.size)
        ws = layout.write_size
        padded = data + bytes([layout.erased_val]) * (-len(data) % ws)
        chunk = 4096
        for off in range(0, len(padded), chunk):
            area.write(off, padded[off : off + chunk])
    print(f"loaded {len(data)} bytes into {part.name} at {part.offset:#x}")
    return EXIT_OK


def cmd_pending(args: argparse.Namespace) -> int:
    layout, flash = _open_flash(args)
    with flash:
        try:
            mb.set_pending(flash.area(layout.slot1), args.permanent, 0, layout.max_align)
        except mb.McubootError as exc:
            raise ConfigError(str(exc)) from exc
    print("secondary slot marked " + ("permanent" if args.permanent else "for a test boot"))
    return EXIT_OK


def cmd_confirm(args: argparse.Namespace) -> int:
    layout, flash = _open_flash(args)
    with flash:
        try:
            mb.set_confirmed(flash.area(layout.slot0), layout.max_align)
        except mb.McubootError as exc:
            raise ConfigError(str(exc)) from exc
    print("primary slot confirmed")
    return EXIT_OK


def cmd_state(args: argparse.Namespace) -> int:
    layout, flash = _open_flash(args)
    with flash:
        out: dict[str, Any] = {}
        for name in ("slot0", "slot1"):
            area = flash.area(layout.partitions[name])
            st = mb.read_swap_state(area, layout.max_align)
            info = mb.image_info(area)
            out[name] = {
                "magic": mb.MAGIC_NAMES[st.magic],
                "swap_type": mb.SWAP_NAMES[st.swap_type],
                "copy_done": mb.FLAG_NAMES[st.copy_done],
                "image_ok": mb.FLAG_NAMES[st.image_ok],
                "version": mb.version_str(info["version"]) if info else None,
                "hash": bytes(info["hash"]).hex() if info else None,
            }
        pri = mb.read_swap_state(flash.area(layout.slot0), layout.max_align)
        sec = mb.read_swap_state(flash.area(layout.slot1), layout.max_align)
        out["next_swap_type"] = mb.SWAP_NAMES[mb.swap_type_for(pri, sec)]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name in ("slot0", "slot1"):
            s = out[name]
            print(
                f"{name}: version {s['version'] or '-'}  magic {s['magic']}  "
                f"image_ok {s['image_ok']}  copy_done {s['copy_done']}  swap_info {s['swap_type']}"
            )
        print(f"next boot: {out['next_swap_type']}")
    return EXIT_OK


def cmd_boot(args: argparse.Namespace) -> int:
    layout, flash = _open_flash(args)
    keys = load_keys(args.key or [])
    with flash:
        flash.arm_power_cut(args.power_cut_at)
        ops0 = flash.ops
        try:
            result = boot(flash, layout, keys)
        except PowerCut as cut:
            done = flash.ops - ops0
            if args.json:
                print(json.dumps({"power_cut": True, "flash_ops": done, "cut_at": cut.op_index}))
            else:
                print(f"power cut before flash operation {cut.op_index} ({done} completed)")
            return EXIT_POWER_CUT
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        for line in result.log:
            print(f"mcuboot: {line}")
        if result.booted is None:
            print(f"PANIC: {result.panic}")
        else:
            b = result.booted
            print(
                f"swap type {result.swap_type}: booted slot {b.slot} version {b.version} "
                f"({'confirmed' if b.confirmed else 'unconfirmed'}), {result.flash_ops} flash ops"
            )
    return EXIT_OK if result.booted else EXIT_REJECTED


def cmd_dump(args: argparse.Namespace) -> int:
    layout, flash = _open_flash(args)
    part = layout.partitions[_slot(layout, args.slot)]
    with flash:
        data = flash.area(part).read(0, part.size)
    try:
        Path(args.out).write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out}: {exc.strerror}") from exc
    print(f"wrote {len(data)} bytes of {part.name} to {args.out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="fota-boot",
        description="Inspect MCUboot images and run MCUboot's boot logic on a simulated flash. "
        "A missing flash file is created erased.",
        epilog="Example: fota-boot --board tiny --flash f.bin load 1 new.img && "
        "fota-boot --board tiny --flash f.bin pending && fota-boot --board tiny --flash f.bin boot",
    )
    p.add_argument("--board", help="board name (see `fota-boot boards`) or a layout .toml")
    p.add_argument("--flash", help="flash image file (created erased if missing)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("boards", help="list the board layouts")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_boards)
    s = sub.add_parser("inspect", help="header, TLVs, hash and signature of an image")
    s.add_argument("image")
    s.add_argument("--key", action="append", help="trusted key (PEM, private or public)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_inspect)
    s = sub.add_parser("load", help="erase a slot and program an image into it")
    s.add_argument("slot", help="0 (primary) or 1 (secondary)")
    s.add_argument("image")
    s.set_defaults(fn=cmd_load)
    s = sub.add_parser("pending", help="mark the secondary slot for a test boot")
    s.add_argument("--permanent", action="store_true", help="make the swap permanent")
    s.set_defaults(fn=cmd_pending)
    s = sub.add_parser("confirm", help="confirm the running (primary) image")
    s.set_defaults(fn=cmd_confirm)
    s = sub.add_parser("state", help="show both slots' trailers and the next swap type")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_state)
    s = sub.add_parser("boot", help="one boot as MCUboot would do it")
    s.add_argument(
        "--power-cut-at", type=int_at_least(1), metavar="N", help="stop before flash op N (1-based)"
    )
    s.add_argument("--key", action="append", help="trusted key: signatures become required")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_boot)
    s = sub.add_parser("dump", help="write a slot's raw contents to a file")
    s.add_argument("slot")
    s.add_argument("out")
    s.set_defaults(fn=cmd_dump)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run("fota-boot", lambda: int(args.fn(args)), also=(mb.McubootError,))


if __name__ == "__main__":
    sys.exit(main())
