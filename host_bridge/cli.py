"""``fota-bridge``: the gateway's command line.  A thin layer over the importable API.

Exit codes: 0 success; 1 the device or job said no (an SMP error, a reverted update);
2 bad input or a fatal error.  Errors are one line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
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
from fota_common.cli import (
    EXIT_NO,
    EXIT_OK,
    OneLineParser,
    int_at_least,
    run,
    seconds,
)
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
    KEY_TYPES,
    SigningParams,
    generate_key,
    load_signing_key,
    sign_payload,
)
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink
from host_bridge.smp.upload import upload


# -- shared options ------------------------------------------------------------------------
def add_port_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, help="device path or pyserial URL (socket://...)")
    p.add_argument(
        "--baud", type=int_at_least(1), default=115200, help="serial baud rate (default 115200)"
    )
    p.add_argument(
        "--framing",
        choices=("console", "raw"),
        default="console",
        help="SMP framing: Zephyr's console framing (default) or raw",
    )
    p.add_argument("--timeout", type=seconds, default=2.0, help="reply timeout in seconds")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="MCUboot image, or a raw binary to sign (needs --version)")
    p.add_argument("--key", help="signing key for raw binaries (imgtool PEM)")
    p.add_argument("--version", dest="img_version", help="version for raw binaries: 1.2.3[+4]")
    p.add_argument("--board", help="board layout for signing parameters (e.g. nrf52840)")
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        help="trusted public key: images must be signed by one (repeatable)",
    )
    p.add_argument(
        "--window", type=int_at_least(1), help="chunks in flight (default: from mcumgr params)"
    )
    p.add_argument("--buf-size", type=int_at_least(1), help="override the device's SMP buffer size")


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


# -- parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="fota-bridge",
        description="Firmware updates for MCUboot devices over SMP/serial, driven by AWS IoT "
        "Jobs. Exit codes: 0 ok, 1 the device said no or the update reverted, 2 error.",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(
        dest="keys_cmd", required=True
    )
    s = keys.add_parser("new", help="generate a signing key (imgtool-compatible PEM)")
    s.add_argument("out", help="where to write the private key (mode 0600)")
    s.add_argument("--type", choices=KEY_TYPES, default="ecdsa-p256")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_keys_new)

    s = sub.add_parser("sign", help="sign a raw binary into an MCUboot image (imgtool)")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--key", help="signing key (omit for a hash-only image)")
    s.add_argument("--version", dest="img_version", required=True, help="1.2.3[+4]")
    s.add_argument("--board", help="take header size, alignment and slot size from a board")
    s.add_argument("--slot-size", type=int_at_least(1, base=0), help="slot size (bytes)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_sign)

    s = sub.add_parser("upload", help="upload an image to the device's secondary slot")
    add_port_options(s)
    add_image_options(s)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--test", action="store_true", help="mark the image for a test boot")
    g.add_argument("--confirm", action="store_true", help="mark the image permanent")
    s.add_argument("--reset", action="store_true", help="reset the device afterwards")
    s.set_defaults(fn=cmd_upload)

    s = sub.add_parser("update", help="the whole flow: upload, test, reset, confirm or revert")
    add_port_options(s)
    add_image_options(s)
    s.add_argument(
        "--policy",
        choices=("device", "bridge"),
        default="device",
        help="who confirms: the new firmware itself (default) or the bridge",
    )
    s.add_argument(
        "--confirm-timeout",
        type=seconds,
        default=30.0,
        help="seconds the new firmware has to confirm itself",
    )
    s.add_argument("--boot-timeout", type=seconds, default=30.0, help="seconds a reboot may take")
    s.set_defaults(fn=cmd_update)

    s = sub.add_parser("run", help="the daemon: AWS IoT Jobs -> firmware on the devices")
    s.add_argument("--config", required=True, help="bridge.toml (see examples/bridge.toml)")
    s.add_argument("--check", action="store_true", help="validate the config and exit")
    s.add_argument("--log-format", choices=("text", "json"), default="text")
    s.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    s.set_defaults(fn=cmd_run)

    # The local jobs service is a package of its own (the `localjobs` extra): a gateway that
    # talks to AWS IoT does not need it, so `fota-bridge jobs` exists only where it is installed.
    try:
        from localjobs.cli import add_jobs_parser
    except ImportError:
        pass
    else:
        add_jobs_parser(sub)  # jobs serve|create|list|describe|cancel: each sets fn

    s = sub.add_parser("state", help="list the device's image slots")
    add_port_options(s)
    s.set_defaults(fn=cmd_state)

    s = sub.add_parser("reset", help="reset the device")
    add_port_options(s)
    s.set_defaults(fn=cmd_reset)

    s = sub.add_parser("confirm", help="confirm the running image (or the one with HASH)")
    add_port_options(s)
    s.add_argument("hash", nargs="?", help="image hash (hex); default: the running image")
    s.set_defaults(fn=cmd_confirm)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run("fota-bridge", lambda: int(args.fn(args)))


if __name__ == "__main__":
    sys.exit(main())
