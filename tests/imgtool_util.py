"""Drive the real imgtool from tests, so images come from the tool the project ships with.

imgtool runs in a subprocess of the current interpreter (``python -m imgtool.main``: the
package has no ``__main__``), so this works inside any virtual environment without relying
on a console script being on PATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IMGTOOL = (sys.executable, "-m", "imgtool.main")

# The flags the project signs with; callers add or override through ``extra``.
SIGN_FLAGS = ("--header-size", "0x200", "--pad-header", "--align", "4", "--slot-size", "0x20000")


def imgtool(*args: str | os.PathLike[str]) -> str:
    """Run imgtool; return its stdout, or fail with its stderr so a test shows why."""
    proc = subprocess.run(
        [*IMGTOOL, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"imgtool {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc.stdout


def keygen(directory: Path, key_type: str, name: str | None = None) -> Path:
    """``imgtool keygen -t KEY_TYPE``: a private PEM (PKCS#8, unencrypted)."""
    path = directory / f"{name or key_type}.pem"
    imgtool("keygen", "-t", key_type, "-k", path)
    return path


def sign(
    directory: Path,
    payload: bytes,
    key: Path | None,
    *,
    name: str,
    version: str = "1.2.3",
    extra: Sequence[str] = (),
) -> Path:
    """``imgtool sign`` PAYLOAD with KEY (None: hash only) into ``directory/NAME.signed.bin``."""
    raw = directory / f"{name}.bin"
    raw.write_bytes(payload)
    out = directory / f"{name}.signed.bin"
    key_args = ("--key", str(key)) if key is not None else ()
    imgtool("sign", *key_args, *SIGN_FLAGS, "--version", version, *extra, raw, out)
    return out


def dumpinfo(image: Path) -> dict[str, Any]:
    """``imgtool dumpinfo -f json``; written to a file since warnings go to stdout."""
    out = image.with_suffix(".json")
    imgtool("dumpinfo", "-f", "json", "-o", out, image)
    info: dict[str, Any] = json.loads(out.read_text())
    return info


def getpub_pem(key: Path) -> bytes:
    """The public half of a keygen PEM, as imgtool exports it."""
    return imgtool("getpub", "-k", key, "-e", "pem").encode()


def getpub_raw(key: Path) -> bytes:
    """``imgtool getpub -e raw``: the DER that KEYHASH hashes (PKCS#1 for RSA, else SPKI)."""
    out = key.with_suffix(".pub.der")
    imgtool("getpub", "-k", key, "-e", "raw", "-o", out)
    return out.read_bytes()


def getpubhash(key: Path) -> bytes:
    """``imgtool getpubhash -e raw``: the SHA-256 that imgtool puts in KEYHASH by default."""
    out = key.with_suffix(".pubhash")
    imgtool("getpubhash", "-k", key, "-e", "raw", "-o", out)
    return out.read_bytes()
