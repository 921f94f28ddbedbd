"""Small MCUboot images made by imgtool, for campaigns, demos and tests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from bootloader.formats.layout import Layout


def sign(payload: bytes, version: str, layout: Layout, key: str | Path | None = None) -> bytes:
    """Sign ``payload`` with imgtool for ``layout`` (hash-only when ``key`` is None)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.bin", Path(tmp) / "out.img"
        src.write_bytes(payload)
        cmd = [sys.executable, "-m", "imgtool.main", "sign", "--pad-header", "--version", version]
        cmd += layout.imgtool_args()
        if key is not None:
            cmd += ["--key", str(key)]
        cmd += [str(src), str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"imgtool sign failed: {proc.stderr.strip() or proc.stdout}")
        return out.read_bytes()


def payload(size: int, seed: str) -> bytes:
    """Deterministic, incompressible test firmware of ``size`` bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def make_pair(layout: Layout, size: int = 1700) -> tuple[bytes, bytes]:
    """v1.0.0 and v2.0.0 images spanning several sectors of ``layout``."""
    return (
        sign(payload(size - 200, "v1"), "1.0.0", layout),
        sign(payload(size, "v2"), "2.0.0", layout),
    )


def keygen(path: str | Path, kind: str = "ecdsa-p256") -> Path:
    """Generate a signing key with imgtool (ecdsa-p256, ed25519, rsa-2048, ...)."""
    cmd = [sys.executable, "-m", "imgtool.main", "keygen", "-k", str(path), "-t", kind]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"imgtool keygen failed: {proc.stderr.strip()}")
    return Path(path)
