"""Build the library folder for a board: every ``mcu/*.py`` compiled to ``lib/mcu/*.mpy``.

    python -m tools.mcu_bundle                       # -> build/mcu-bundle/
    python -m tools.mcu_bundle --out DIR --sources   # .py files instead of .mpy
    python -m tools.mcu_bundle --mpy-cross PATH      # the compiler of the board's firmware

Output::

    build/mcu-bundle/lib/mcu/__init__.mpy, fota.mpy, jobs.mpy, mcuboot.mpy, ...
    build/mcu-bundle/code.py          mcu/examples/code.py, the direct-mode example program

Copy ``lib/mcu`` into ``CIRCUITPY/lib/`` (and ``code.py`` to ``CIRCUITPY/`` if you start from
the example).  A ``.mpy`` loads only on a firmware whose bytecode version matches the
compiler's: the ``mpy-cross`` package emits MicroPython's current format; for CircuitPython
pass the ``mpy-cross`` of your CircuitPython release with ``--mpy-cross`` (or use
``--sources``).  Exit status 0 on success, 2 when a file does not compile (the compiler's
message is printed).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

from fota_common.cli import OneLineParser, run
from fota_common.errors import BridgeError

REPO: Final = Path(__file__).resolve().parent.parent
MCU: Final = REPO / "mcu"
DEFAULT_OUT: Final = REPO / "build" / "mcu-bundle"
COMPILE_TIMEOUT_S: Final = 60.0


class BundleError(BridgeError):
    """A module did not compile, or the compiler could not be run."""


def sources() -> list[Path]:
    """The device modules: mcu/*.py (mcu/examples/ holds programs, not library code)."""
    return sorted(p for p in MCU.glob("*.py") if p.is_file())


def _compiler(mpy_cross: str | None) -> list[str]:
    if mpy_cross is not None:
        return [mpy_cross]
    # The mpy-cross package's runner; a module call so that a missing binary is our error.
    return [
        sys.executable,
        "-c",
        "import sys, mpy_cross; sys.exit(mpy_cross.run(*sys.argv[1:]).wait())",
    ]


def compile_one(source: Path, target: Path, mpy_cross: str | None = None) -> None:
    cmd = [*_compiler(mpy_cross), "-o", str(target), str(source)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise BundleError(f"cannot run mpy-cross ({cmd[0]}): {why}") from exc
    if proc.returncode != 0 or not target.is_file():
        message = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise BundleError(f"mpy-cross failed on {source.relative_to(REPO)}:\n{message}")


def build(out: Path, *, compiled: bool = True, mpy_cross: str | None = None) -> list[Path]:
    """Write the bundle into ``out`` (its lib/mcu is replaced); returns the files written."""
    lib = out / "lib" / "mcu"
    if out.exists() and not out.is_dir():
        raise BundleError(f"--out {out} is a file: give a directory (it is created)")
    try:
        if lib.exists():
            shutil.rmtree(lib)
        lib.mkdir(parents=True)
    except OSError as exc:
        raise BundleError(f"cannot create {lib}: {exc.strerror} (see --out)") from exc
    written = []
    for source in sources():
        if compiled:
            target = lib / (source.stem + ".mpy")
            compile_one(source, target, mpy_cross)
        else:
            target = lib / source.name
            _copy(source, target)
        written.append(target)
    example = MCU / "examples" / "code.py"
    if example.is_file():
        _copy(example, out / "code.py")
        written.append(out / "code.py")
    return written


def _copy(source: Path, target: Path) -> None:
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        raise BundleError(f"cannot write {target}: {exc.strerror}") from exc


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="mcu-bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    p.add_argument("--sources", action="store_true", help="copy .py files, do not compile")
    p.add_argument("--mpy-cross", help="path of the mpy-cross binary to use")
    args = p.parse_args(argv)

    def bundle() -> int:
        written = build(args.out, compiled=not args.sources, mpy_cross=args.mpy_cross)
        size = sum(f.stat().st_size for f in written)
        print(f"Wrote {len(written)} files ({size} bytes) to {args.out}")
        print(f"Copy {args.out / 'lib' / 'mcu'} to CIRCUITPY/lib/mcu")
        return 0

    return run("mcu-bundle", bundle)


if __name__ == "__main__":
    sys.exit(main())
