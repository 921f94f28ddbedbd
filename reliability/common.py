"""What every campaign shares: results, sizes, signed test images, flash-file checks."""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootloader.formats.image import ImageError, parse_image
from bootloader.formats.keys import load_public_key
from bootloader.formats.layout import Layout, load_board
from bootloader.formats.verify import verify_image
from bootloader.sim.flash import Flash
from bootloader.sim.testimages import payload
from harness.procs import PY as PY  # re-exported: the campaigns use common.PY
from harness.procs import REPO_ROOT as REPO_ROOT  # re-exported
from host_bridge.image.sign import SigningParams, generate_key, load_signing_key, sign_payload
from mcu import mcuboot as mb


@dataclass
class Figure:
    """One table of a campaign's report: what was measured, and the command behind it."""

    title: str
    header: list[str]
    rows: list[list[str]]
    command: str
    notes: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)  # the child processes' commands


@dataclass
class CampaignResult:
    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)  # raw counts, for tests

    def violate(self, what: str) -> None:
        self.violations.append(what)


def command_line(module: str, args: Sequence[str]) -> str:
    """``python -m module args`` as a person would type it in the repository."""
    return shlex.join(["python", "-m", module, *args])


class Deadline:
    """A wall-clock budget: every campaign loop checks one, so none runs unbounded."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.left() <= 0


# -- images ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SignedImage:
    version: str
    data: bytes
    tlv_hash: bytes  # the SHA256 TLV: what the device reports and MCUboot logs

    @property
    def short(self) -> str:
        return self.tlv_hash.hex()[:16]


@dataclass(frozen=True)
class ImageSet:
    key: Path  # private signing key (imgtool PEM)
    pub: Path  # its public key, for ``fota-vmcu --key`` and the bridge's trusted keys
    images: dict[str, SignedImage]

    def by_hash(self, h: bytes | str) -> SignedImage | None:
        text = h.hex() if isinstance(h, bytes) else h
        return next(
            (i for i in self.images.values() if text and i.tlv_hash.hex().startswith(text)), None
        )


def tlv_hash(data: bytes) -> bytes:
    image = parse_image(data)
    digest = image.sha256_tlv
    assert digest is not None, "imgtool images carry a SHA256 TLV"
    return bytes(digest)


def firmware_payload(size: int, seed: str, on_boot: str = "confirm") -> bytes:
    """Test firmware: the virtual MCU's on-boot behaviour, then incompressible bytes."""
    head = b'#vmcu:{"on_boot": "' + on_boot.encode() + b'"}\n'
    return head + payload(size - len(head), seed)


def make_images(
    work: Path, board: str, total_size: int, versions: Sequence[str], on_boot: str = "confirm"
) -> ImageSet:
    """ECDSA-P256-signed images (imgtool) of about ``total_size`` bytes each."""
    layout = load_board(board)
    work.mkdir(parents=True, exist_ok=True)
    key = work / "signing-key.pem"
    if not key.exists():
        generate_key(key, "ecdsa-p256")
    pub = work / "signing-key.pub.pem"
    if not pub.exists():
        pub.write_bytes(load_signing_key(key).get_public_pem())
    params = SigningParams.from_layout(layout)
    overhead = layout.header_size + 256  # header, TLV area and signature
    images = {}
    for v in versions:
        data = sign_payload(firmware_payload(total_size - overhead, v, on_boot), key, v, params)
        images[v] = SignedImage(v, data, tlv_hash(data))
    return ImageSet(key, pub, images)


# -- flash files -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlotCheck:
    """Slot 0 of a flash file, judged as ``fota-boot inspect`` judges an image."""

    valid: bool
    reason: str
    tlv_hash: bytes | None
    confirmed: bool


def check_flash_file(path: Path, layout: Layout, pub: Path) -> SlotCheck:
    """Read the flash file (a copy: the device may be writing it) and validate slot 0."""
    flash = Flash.for_layout(layout)
    flash.restore(path.read_bytes())
    pri = flash.area(layout.slot0)
    info = mb.image_info(pri)
    st = mb.read_swap_state(pri, layout.max_align)
    confirmed = not (st.magic == mb.MAGIC_GOOD and st.image_ok == mb.FLAG_UNSET)
    if info is None:
        return SlotCheck(False, "no image header in slot 0", None, confirmed)
    data = pri.read(0, min(int(info["size"]), pri.size))
    try:
        result = verify_image(data, [load_public_key(pub.read_bytes())])
    except ImageError as exc:
        return SlotCheck(False, str(exc), bytes(info["hash"]), confirmed)
    return SlotCheck(bool(result.ok), str(result.reason or "ok"), bytes(info["hash"]), confirmed)


# -- the machine -------------------------------------------------------------------------------
def environment() -> dict[str, str]:
    """Date, commit and machine, for the report's header."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "machine": f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
