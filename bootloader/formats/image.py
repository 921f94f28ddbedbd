"""MCUboot image codec: parse and describe images on the host.

Bytes in, values out: the constants, header, version and TLV types, :func:`parse_image` and
:func:`describe`. The layout follows MCUboot's ``image.h``; the signing conventions the
TLVs carry follow imgtool, which is what produces the images. Public keys live in
:mod:`bootloader.formats.keys`, hash and signature checks in :mod:`bootloader.formats.verify`.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from typing import Final

from fota_common.errors import ImageError as ImageError  # re-exported

IMAGE_MAGIC: Final = 0x96F3B83D
TLV_INFO_MAGIC: Final = 0x6907
TLV_PROT_INFO_MAGIC: Final = 0x6908

IMAGE_F_PIC: Final = 0x0000_0001
IMAGE_F_ENCRYPTED_AES128: Final = 0x0000_0004
IMAGE_F_ENCRYPTED_AES256: Final = 0x0000_0008
IMAGE_F_NON_BOOTABLE: Final = 0x0000_0010
IMAGE_F_RAM_LOAD: Final = 0x0000_0020
IMAGE_F_ROM_FIXED: Final = 0x0000_0100
IMAGE_F_COMPRESSED_LZMA1: Final = 0x0000_0200
IMAGE_F_COMPRESSED_LZMA2: Final = 0x0000_0400
IMAGE_F_COMPRESSED_ARM_THUMB: Final = 0x0000_0800

TLV_KEYHASH: Final = 0x01
TLV_PUBKEY: Final = 0x02
TLV_SHA256: Final = 0x10
TLV_SHA384: Final = 0x11
TLV_SHA512: Final = 0x12
TLV_RSA2048_PSS: Final = 0x20
TLV_ECDSA_SIG: Final = 0x22
TLV_RSA3072_PSS: Final = 0x23
TLV_ED25519: Final = 0x24
TLV_SIG_PURE: Final = 0x25
TLV_ENC_RSA2048: Final = 0x30
TLV_ENC_KW: Final = 0x31
TLV_ENC_EC256: Final = 0x32
TLV_ENC_X25519: Final = 0x33
TLV_ENC_X25519_SHA512: Final = 0x34
TLV_DEPENDENCY: Final = 0x40
TLV_SEC_CNT: Final = 0x50
TLV_BOOT_RECORD: Final = 0x60

# fmt: off
FLAG_NAMES: Final[dict[int, str]] = {
    IMAGE_F_PIC: "PIC", IMAGE_F_ENCRYPTED_AES128: "ENCRYPTED_AES128",
    IMAGE_F_ENCRYPTED_AES256: "ENCRYPTED_AES256", IMAGE_F_NON_BOOTABLE: "NON_BOOTABLE",
    IMAGE_F_RAM_LOAD: "RAM_LOAD", IMAGE_F_ROM_FIXED: "ROM_FIXED",
    IMAGE_F_COMPRESSED_LZMA1: "COMPRESSED_LZMA1", IMAGE_F_COMPRESSED_LZMA2: "COMPRESSED_LZMA2",
    IMAGE_F_COMPRESSED_ARM_THUMB: "COMPRESSED_ARM_THUMB",
}
# MCUboot's names (imgtool spells a few differently: ECDSASIG, RSA2048, ENCRSA2048...).
TLV_NAMES: Final[dict[int, str]] = {
    TLV_KEYHASH: "KEYHASH", TLV_PUBKEY: "PUBKEY",
    TLV_SHA256: "SHA256", TLV_SHA384: "SHA384", TLV_SHA512: "SHA512",
    TLV_RSA2048_PSS: "RSA2048_PSS", TLV_ECDSA_SIG: "ECDSA_SIG", TLV_RSA3072_PSS: "RSA3072_PSS",
    TLV_ED25519: "ED25519", TLV_SIG_PURE: "SIG_PURE",
    TLV_ENC_RSA2048: "ENC_RSA2048", TLV_ENC_KW: "ENC_KW", TLV_ENC_EC256: "ENC_EC256",
    TLV_ENC_X25519: "ENC_X25519", TLV_ENC_X25519_SHA512: "ENC_X25519_SHA512",
    TLV_DEPENDENCY: "DEPENDENCY", TLV_SEC_CNT: "SEC_CNT", TLV_BOOT_RECORD: "BOOT_RECORD",
    0x70: "DECOMP_SIZE", 0x71: "DECOMP_SHA", 0x72: "DECOMP_SIGNATURE", 0x73: "COMP_DEC_SIZE",
    0x74: "UUID_VID", 0x75: "UUID_CID",
}
# fmt: on
HASH_TLVS: Final = {TLV_SHA256: "sha256", TLV_SHA384: "sha384", TLV_SHA512: "sha512"}
SIGNATURE_TLVS: Final = frozenset({TLV_RSA2048_PSS, TLV_ECDSA_SIG, TLV_RSA3072_PSS, TLV_ED25519})

# ih_magic, ih_load_addr, ih_hdr_size, ih_protect_tlv_size, ih_img_size, ih_flags, ih_ver, _pad1
_HEADER: Final = struct.Struct("<IIHHII8sI")
assert _HEADER.size == 32
_VERSION: Final = struct.Struct("<BBHI")
assert _VERSION.size == 8
_TLV_INFO: Final = struct.Struct("<HH")  # it_magic, it_tlv_tot (counts these 4 bytes)
assert _TLV_INFO.size == 4
_TLV: Final = struct.Struct("<HH")  # it_type, it_len (value length only)
assert _TLV.size == 4
_DEPENDENCY: Final = struct.Struct("<B3x8s")  # image id, pad, image_version
assert _DEPENDENCY.size == 12
_SEC_CNT: Final = struct.Struct("<I")
assert _SEC_CNT.size == 4

HEADER_SIZE: Final = _HEADER.size
_VERSION_RE: Final = re.compile(r"(\d+)(?:\.(\d+)(?:\.(\d+)(?:[+.](\d+))?)?)?")


@dataclass(frozen=True, order=True)
class ImageVersion:
    """``image_version``: ordering compares major, minor, revision, then build."""

    major: int
    minor: int = 0
    revision: int = 0
    build: int = 0

    def __post_init__(self) -> None:
        limits = (("major", 0xFF), ("minor", 0xFF), ("revision", 0xFFFF), ("build", 0xFFFFFFFF))
        for name, top in limits:
            if not 0 <= getattr(self, name) <= top:
                raise ImageError(f"version {name} must be 0..{top}", "bad-version")

    def __str__(self) -> str:
        """Zephyr's img_mgmt form, as SMP image state reports it: ".build" only if non-zero."""
        base = f"{self.major}.{self.minor}.{self.revision}"
        return f"{base}.{self.build}" if self.build else base

    @property
    def semver(self) -> str:
        """imgtool's form ("1.2.3+0"), as ``imgtool sign -v`` takes and dumpinfo prints it."""
        return f"{self.major}.{self.minor}.{self.revision}+{self.build}"

    @classmethod
    def parse(cls, text: str) -> ImageVersion:
        """Accept "1", "1.2", "1.2.3", "1.2.3+4" (imgtool) and "1.2.3.4" (Zephyr)."""
        m = _VERSION_RE.fullmatch(text.strip())
        if m is None:
            raise ImageError(f"bad version {text!r} (expected 1.2.3 or 1.2.3+4)", "bad-version")
        return cls(*(int(g) if g else 0 for g in m.groups()))

    @classmethod
    def unpack(cls, raw: bytes) -> ImageVersion:
        return cls(*_VERSION.unpack(raw))

    def pack(self) -> bytes:
        return _VERSION.pack(self.major, self.minor, self.revision, self.build)


@dataclass(frozen=True)
class ImageHeader:
    """The 32-byte ``image_header`` at offset 0; ``hdr_size`` may be larger (padding)."""

    magic: int
    load_addr: int
    hdr_size: int
    protect_tlv_size: int
    img_size: int
    flags: int
    version: ImageVersion

    @classmethod
    def parse(cls, data: bytes) -> ImageHeader:
        if len(data) < HEADER_SIZE:
            raise ImageError(f"truncated: {len(data)} bytes, less than a header", "truncated")
        magic, load, hdr_size, prot, img_size, flags, ver, _ = _HEADER.unpack_from(data)
        if magic != IMAGE_MAGIC:
            hint = " (erased flash?)" if magic == 0xFFFFFFFF else ""
            msg = f"bad image magic 0x{magic:08x} (expected 0x{IMAGE_MAGIC:08x}){hint}"
            raise ImageError(msg, "bad-magic")
        if hdr_size < HEADER_SIZE:
            raise ImageError(f"header size {hdr_size} is below the 32-byte minimum", "bad-header")
        return cls(magic, load, hdr_size, prot, img_size, flags, ImageVersion.unpack(ver))

    def pack(self) -> bytes:
        """The 32 header bytes (without the padding up to ``hdr_size``)."""
        head = (self.magic, self.load_addr, self.hdr_size, self.protect_tlv_size, self.img_size)
        return _HEADER.pack(*head, self.flags, self.version.pack(), 0)

    @property
    def flag_names(self) -> tuple[str, ...]:
        known = tuple(name for bit, name in FLAG_NAMES.items() if self.flags & bit)
        unknown = self.flags & ~sum(FLAG_NAMES)
        return (*known, f"0x{unknown:08x}") if unknown else known

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & (IMAGE_F_ENCRYPTED_AES128 | IMAGE_F_ENCRYPTED_AES256))


def tlv_type_name(tlv_type: int) -> str:
    return TLV_NAMES.get(tlv_type, f"0x{tlv_type:04x}")


@dataclass(frozen=True)
class Tlv:
    type: int
    value: bytes
    protected: bool

    @property
    def name(self) -> str:
        return tlv_type_name(self.type)

    def describe(self) -> dict[str, object]:
        size, protected = len(self.value), self.protected
        row = {"type": self.type, "name": self.name, "len": size, "protected": protected}
        return row | {"value": self.value.hex()}


@dataclass(frozen=True)
class McubootImage:
    """A parsed image; ``data`` is the image itself, without trailing padding or trailer."""

    header: ImageHeader
    tlvs: tuple[Tlv, ...]
    data: bytes
    trailing: int  # bytes after the TLV area (padding, trailer, rest of a slot dump)

    @property
    def version(self) -> ImageVersion:
        return self.header.version

    @property
    def body_range(self) -> range:
        return range(self.header.hdr_size, self.header.hdr_size + self.header.img_size)

    @property
    def body(self) -> bytes:
        return self.data[self.body_range.start : self.body_range.stop]

    @property
    def hash_region(self) -> bytes:
        """What the hash and signatures cover: header, body and protected TLV area."""
        return self.data[: self.body_range.stop + self.header.protect_tlv_size]

    @property
    def total_size(self) -> int:
        """Offset of the end of the unprotected TLV area: the bytes to upload."""
        return len(self.data)

    @property
    def protected_tlvs(self) -> tuple[Tlv, ...]:
        return tuple(t for t in self.tlvs if t.protected)

    @property
    def unprotected_tlvs(self) -> tuple[Tlv, ...]:
        return tuple(t for t in self.tlvs if not t.protected)

    def find(self, tlv_type: int) -> tuple[Tlv, ...]:
        return tuple(t for t in self.tlvs if t.type == tlv_type)

    def hash_tlv(self) -> Tlv | None:
        """The first SHA256/SHA384/SHA512 TLV of the unprotected area (MCUboot reads it there)."""
        return next((t for t in self.unprotected_tlvs if t.type in HASH_TLVS), None)

    @property
    def sha256_tlv(self) -> bytes | None:
        """The SHA256 TLV value: what SMP image state reports as a slot's "hash"."""
        return next((t.value for t in self.unprotected_tlvs if t.type == TLV_SHA256), None)

    @property
    def security_counter(self) -> int | None:
        for t in self.find(TLV_SEC_CNT):
            if len(t.value) == _SEC_CNT.size:
                return int(_SEC_CNT.unpack(t.value)[0])
        return None

    @property
    def dependencies(self) -> tuple[tuple[int, ImageVersion], ...]:
        """(image index, minimum version) pairs from DEPENDENCY TLVs."""
        out = []
        for t in self.find(TLV_DEPENDENCY):
            if len(t.value) == _DEPENDENCY.size:
                image_id, ver = _DEPENDENCY.unpack(t.value)
                out.append((int(image_id), ImageVersion.unpack(ver)))
        return tuple(out)


def _parse_tlv_area(data: bytes, off: int, protected: bool) -> tuple[list[Tlv], int]:
    """Parse the TLV area at ``off``; return its TLVs and the offset just past it."""
    what, magic = (
        ("protected TLV area", TLV_PROT_INFO_MAGIC) if protected else ("TLV area", TLV_INFO_MAGIC)
    )
    if off + _TLV_INFO.size > len(data):
        msg = f"truncated: the {what} should start at {off} but the data ends at {len(data)}"
        raise ImageError(msg, "truncated")
    found, tot = _TLV_INFO.unpack_from(data, off)
    if found != magic:
        msg = f"bad {what} magic 0x{found:04x} at offset {off} (expected 0x{magic:04x})"
        raise ImageError(msg, "bad-tlv-magic")
    if tot < _TLV_INFO.size:
        raise ImageError(f"{what} at offset {off} claims only {tot} bytes", "bad-tlv")
    end = off + tot
    if end > len(data):
        msg = f"truncated: the {what} says {tot} bytes but the data ends at {len(data)}"
        raise ImageError(msg, "truncated")
    tlvs = []
    pos = off + _TLV_INFO.size
    while pos < end:
        if pos + _TLV.size > end:
            raise ImageError(f"{what}: {end - pos} stray bytes at offset {pos}", "bad-tlv")
        tlv_type, length = _TLV.unpack_from(data, pos)
        start = pos + _TLV.size
        if start + length > end:
            name = tlv_type_name(tlv_type)
            msg = f"{what}: TLV {name} at offset {pos} of length {length} overruns the area"
            raise ImageError(msg, "bad-tlv")
        tlvs.append(Tlv(tlv_type, data[start : start + length], protected))
        pos = start + length
    return tlvs, end


def parse_image(data: bytes | bytearray | memoryview) -> McubootImage:
    """Parse an image; trailing bytes (padding, a trailer, a whole slot) are tolerated."""
    raw = bytes(data)
    header = ImageHeader.parse(raw)
    off = header.hdr_size + header.img_size
    if off > len(raw):
        msg = (
            f"truncated: header says {header.img_size} bytes of body after a "
            f"{header.hdr_size}-byte header but the data ends at {len(raw)}"
        )
        raise ImageError(msg, "truncated")
    tlvs: list[Tlv] = []
    if header.protect_tlv_size:
        tlvs, end = _parse_tlv_area(raw, off, protected=True)
        if end - off != header.protect_tlv_size:
            msg = f"protected TLV area is {end - off} bytes, header says {header.protect_tlv_size}"
            raise ImageError(msg, "bad-tlv")
        off = end
    elif raw[off : off + 2] == TLV_PROT_INFO_MAGIC.to_bytes(2, "little"):
        raise ImageError("protected TLV area present but protect_tlv_size is 0", "bad-tlv")
    unprotected, end = _parse_tlv_area(raw, off, protected=False)
    return McubootImage(header, (*tlvs, *unprotected), raw[:end], len(raw) - end)


def load_image(path: str | os.PathLike[str]) -> McubootImage:
    with open(path, "rb") as f:
        return parse_image(f.read())


# --- reporting ------------------------------------------------------------------------------


def describe(image: McubootImage) -> dict[str, object]:
    """A flat, JSON-ready summary for ``--json`` output and logs."""
    h, hash_tlv = image.header, image.hash_tlv()
    return {
        "magic": f"0x{h.magic:08x}",
        "load_addr": f"0x{h.load_addr:08x}",
        "hdr_size": h.hdr_size,
        "protect_tlv_size": h.protect_tlv_size,
        "img_size": h.img_size,
        "flags": f"0x{h.flags:08x}",
        "flag_names": list(h.flag_names),
        "version": str(h.version),
        "version_semver": h.version.semver,
        "tlvs": [t.describe() for t in image.tlvs],
        "hash_alg": HASH_TLVS[hash_tlv.type] if hash_tlv else None,
        "hash": hash_tlv.value.hex() if hash_tlv else None,
        "security_counter": image.security_counter,
        "dependencies": [{"image": i, "version": str(v)} for i, v in image.dependencies],
        "total_size": image.total_size,
        "trailing_bytes": image.trailing,
    }
