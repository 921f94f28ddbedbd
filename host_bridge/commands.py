"""The ``fota-bridge`` commands: each takes the parsed arguments and returns an exit code.

The parser and the entry point are in :mod:`host_bridge.cli`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from bootloader.formats.layout import LayoutError, load_board
from fota_common.cli import EXIT_NO, EXIT_OK
from fota_common.errors import ConfigError, DeviceError, ImageError
from fota_common.tls import check_tls_files
from host_bridge import logs
from host_bridge.config import load_config
from host_bridge.daemon import Bridge
from host_bridge.device import DeviceUpdater, UpdateOptions
from host_bridge.image.prepare import (
    PreparedImage,
    is_mcuboot_image,
    load_trusted_keys,
    prepare,
)
from host_bridge.image.sign import (
    SigningParams,
    generate_key,
    load_signing_key,
    sign_payload,
)
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink
from host_bridge.smp.upload import upload


def _client(args: argparse.Namespace) -> Any:

    link = SerialLink(args.port, args.baud, args.framing)
    return SmpClient(link, timeout_s=args.timeout)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _signing_params(
    args: argparse.Namespace, client: Any | None
) -> tuple[SigningParams, int | None]:
    """Signing parameters and the slot limit, from --board or the device's slot info."""
    if getattr(args, "board", None):
        try:
            lay = load_board(args.board)
        except LayoutError as exc:
            raise ConfigError(str(exc)) from exc
        return SigningParams.from_layout(lay), lay.max_image_size()
    if client is not None:
        info = client.slot_info()
        try:
            img = info["images"][0] if info else None
            if isinstance(img, dict):
                slots = {int(s["slot"]): int(s["size"]) for s in img.get("slots", [])}
                limit = img.get("max_image_size")
                return SigningParams(slot_size=slots.get(1, 0)), (int(limit) if limit else None)
        except (KeyError, IndexError, TypeError, ValueError):
            pass  # a malformed slot-info reply: sign without the device's limits
    return SigningParams(), None


def _prepare(args: argparse.Namespace, client: Any | None) -> PreparedImage:
    # Everything local is checked before the device is asked for its slot sizes.
    data = _read(args.image, "image")
    trusted = load_trusted_keys(args.trust)
    if not is_mcuboot_image(data) and args.img_version is None:
        raise ImageError(
            f"{args.image} is not an MCUboot image: give --version (and --key) to sign it"
        )
    params, limit = _signing_params(args, client)
    return prepare(
        data,
        trusted_keys=trusted,
        signing_key=args.key,
        version=args.img_version,
        params=params,
        max_image_size=limit,
    )


def _image(args: argparse.Namespace, client: Any | None) -> PreparedImage:
    """``_prepare``, with the image's path in front of any reason it is refused."""
    try:
        return _prepare(args, client)
    except ImageError as exc:
        if args.image in str(exc):
            raise
        raise ImageError(f"{args.image}: {exc}") from exc


@contextmanager
def progress_bar(enabled: bool, label: str) -> Iterator[Callable[[int, int], None]]:
    """Rich progress (bytes, rate, ETA) on a terminal; silent otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield lambda done, total: None
        return

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _emit(args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2))
    else:
        print(text)


# -- commands ------------------------------------------------------------------------------
def cmd_keys_new(args: argparse.Namespace) -> int:
    path = generate_key(args.out, args.type)
    _emit(args, {"key": str(path), "type": args.type}, f"wrote {args.type} key to {path} (0600)")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    params, limit = _signing_params(args, None)
    if args.slot_size:
        params = SigningParams(
            params.header_size,
            params.align,
            params.max_align,
            args.slot_size,
            params.max_sectors,
            params.overwrite_only,
        )
    data = sign_payload(_read(args.input, "firmware"), args.key, args.img_version, params)
    if limit is not None and len(data) > limit:
        raise ImageError(f"signed image is {len(data)} bytes but the slot holds at most {limit}")
    try:
        Path(args.output).write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.output}: {exc.strerror}") from exc
    _emit(
        args,
        {"output": args.output, "bytes": len(data)},
        f"signed {args.input} -> {args.output} ({len(data)} bytes, version {args.img_version})",
    )
    return EXIT_OK


def cmd_state(args: argparse.Namespace) -> int:
    client = _client(args)
    states = client.image_state()
    if args.json:
        print(json.dumps({"images": [s.as_dict() for s in states]}, indent=2))
        return EXIT_OK
    print(f"{'slot':<5}{'version':<14}{'flags':<34}hash")
    for s in states:
        flags = " ".join(
            n
            for n, v in (
                ("active", s.active),
                ("confirmed", s.confirmed),
                ("pending", s.pending),
                ("permanent", s.permanent),
            )
            if v
        )
        print(f"{s.slot:<5}{s.version:<14}{flags:<34}{s.hash.hex()}")
    return EXIT_OK


def cmd_upload(args: argparse.Namespace) -> int:

    client = _client(args)
    image = _image(args, client)
    with progress_bar(not args.json, "uploading") as bar:
        result = upload(
            client, image.data, window=args.window, buf_size=args.buf_size, progress=bar
        )
    if result.match is False:
        raise DeviceError("the device's hash of the uploaded image does not match", 0)
    marked = None
    if args.test or args.confirm:
        client.state_write(image.hash, confirm=bool(args.confirm))
        marked = "confirm" if args.confirm else "test"
    if args.reset:
        client.reset()
    doc = {
        "bytes": result.size,
        "seconds": round(result.seconds, 3),
        "rate": round(result.rate),
        "resumed_from": result.resumed_from,
        "version": image.version,
        "hash": image.hash.hex(),
        "marked": marked,
        "reset": bool(args.reset),
    }
    _emit(
        args,
        doc,
        f"Wrote {result.size} bytes in {result.seconds:.2f} s "
        f"({result.rate / 1024:.1f} KiB/s), version {image.version}"
        + (f", marked for {marked}" if marked else "")
        + (", reset" if args.reset else ""),
    )
    return EXIT_OK


def cmd_update(args: argparse.Namespace) -> int:

    client = _client(args)
    image = _image(args, client)
    client.link.open()  # a port that cannot be opened is exit 2, not a failed update
    opts = UpdateOptions(
        policy=args.policy,
        confirm_timeout_s=args.confirm_timeout,
        boot_timeout_s=args.boot_timeout,
        window=args.window,
        buf_size=args.buf_size,
    )
    with progress_bar(not args.json, "uploading") as bar:

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase == "uploading":
                bar(done, total)

        outcome = DeviceUpdater(client, opts, on_progress).update(image)
    text = f"{outcome.status}: running {outcome.version or '?'}"
    if outcome.reason:
        text += f" ({outcome.reason})"
    _emit(args, outcome.as_dict(), text)
    return EXIT_OK if outcome.ok else EXIT_NO


def cmd_run(args: argparse.Namespace) -> int:

    cfg = load_config(args.config)
    logs.setup(args.log_format, args.log_level)
    if cfg.signing_key is not None:
        load_signing_key(cfg.signing_key)  # a usable private key, before any job needs it
    if args.check:
        load_trusted_keys(cfg.trusted_keys)  # each must be a usable public key
        tls = cfg.broker.tls
        mode = "PLAINTEXT" if tls is None else "mutual TLS" if tls.cert else "TLS"
        print(
            f"{args.config}: OK ({len(cfg.devices)} devices, broker {cfg.broker.host}:"
            f"{cfg.broker.port}, {mode})"
        )
        return EXIT_OK
    tls = cfg.broker.tls
    if tls is not None:  # --check leaves the TLS files' contents to the connection
        check_tls_files(tls.ca, tls.cert, tls.key)
    return Bridge(cfg).run_forever()


def cmd_reset(args: argparse.Namespace) -> int:
    _client(args).reset()
    _emit(args, {"reset": True}, "reset sent")
    return EXIT_OK


def cmd_confirm(args: argparse.Namespace) -> int:
    try:
        h = bytes.fromhex(args.hash) if args.hash else None
    except ValueError as exc:
        raise ConfigError(f"'{args.hash}' is not a hex image hash") from exc
    states = _client(args).state_write(h, confirm=True)
    _emit(args, {"images": [s.as_dict() for s in states]}, "confirmed")
    return EXIT_OK
