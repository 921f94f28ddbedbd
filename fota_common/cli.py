"""The one command-line runner: every entry point (``fota-bridge``, ``fota-bridge jobs``,
``fota-boot``, ``fota-vmcu`` and the tools) parses with :class:`OneLineParser` and runs its
command under :func:`run`, which maps every error to one line and the documented exit codes:

    0  success
    1  the device or the job said no (an SMP error reply, an image that would be rejected)
    2  bad input or a fatal error (any :class:`~fota_common.errors.BridgeError`), an interrupt,
       or a bug (printed as an "internal error" line, never a traceback)
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

from fota_common.errors import BridgeError, DeviceError

__all__ = [
    "EXIT_ERROR",
    "EXIT_NO",
    "EXIT_OK",
    "OneLineParser",
    "int_at_least",
    "int_between",
    "internal_error",
    "run",
    "seconds",
]

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(low: int, base: int = 10) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low`` (``base`` 0: 0x.. and 0o.. too)."""

    def parse(text: str) -> int:
        try:
            value = int(text, base)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer of at least {low}, not {text!r}")
        return value

    return parse


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer {low}..{high}, not {text!r}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value


def internal_error(prog: str, exc: BaseException) -> int:
    """The safety net under every command: one line for a bug, never a traceback."""
    print(f"{prog}: internal error: {type(exc).__name__}: {exc} (please report)", file=sys.stderr)
    return EXIT_ERROR


def run(
    prog: str,
    command: Callable[[], int],
    *,
    also: tuple[type[BaseException], ...] = (),
) -> int:
    """Run ``command`` and return its exit code, or print the error as one line.

    ``also`` names further exception types that are one-line user errors for this program
    (e.g. the MCU codecs' own exceptions, which cannot derive from BridgeError because that
    code runs on the device).
    """
    try:
        return command()
    except DeviceError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_NO
    except BridgeError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if also and isinstance(exc, also):
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        return internal_error(prog, exc)
