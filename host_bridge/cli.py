"""``fota-bridge``: the gateway's command line.  A thin layer over the importable API.

Exit codes: 0 success; 1 the device or job said no (an SMP error, a reverted update);
2 bad input or a fatal error.  Errors are one line, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fota_common.cli import OneLineParser, int_at_least, run, seconds
from host_bridge.commands import (
    cmd_confirm,
    cmd_keys_new,
    cmd_reset,
    cmd_run,
    cmd_sign,
    cmd_state,
    cmd_update,
    cmd_upload,
)
from host_bridge.image.sign import KEY_TYPES


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
