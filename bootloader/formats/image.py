"""MCUboot image codec: parse, describe and verify signed images on the host.

Bytes in, values out: the bridge checks an image before it spends minutes uploading it over
SMP, and reports the same hash the device will report. The layout and the validation rules
follow MCUboot's ``image.h`` and ``bootutil_img_validate``; the signing conventions follow
imgtool, which is what produces the images.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

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

PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
SignatureStatus: TypeAlias = Literal["none", "ok", "bad", "unknown-key", "no-signature"]


def _hex(value: bytes, n: int = 8) -> str:
    return value[:n].hex() + ("..." if len(value) > n else "")


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


# --- keys -----------------------------------------------------------------------------------

_PRIVATE_TYPES: Final = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)
_PUBLIC_TYPES: Final = (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)


def load_public_key(data: bytes, password: bytes | None = None) -> PublicKey:
    """Public key from PEM or DER, private or public (imgtool keygen writes private PEMs)."""
    ser = serialization
    private, public = (
        (ser.load_pem_private_key, ser.load_pem_public_key)
        if b"-----BEGIN" in data
        else (ser.load_der_private_key, ser.load_der_public_key)
    )
    key: object
    try:
        key = private(data, password)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = public(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            msg = "not a PEM or DER key that cryptography can read (or it needs a password)"
            raise ImageError(msg, "bad-key") from exc
    if isinstance(key, _PRIVATE_TYPES):
        key = key.public_key()
    if isinstance(key, _PUBLIC_TYPES):
        return key
    raise ImageError(f"unsupported key type {type(key).__name__}", "bad-key")


def public_key_der(key: PublicKey) -> bytes:
    """The bytes imgtool hashes into KEYHASH or puts in PUBKEY: PKCS#1 for RSA, else SPKI."""
    fmt = serialization.PublicFormat
    form = fmt.PKCS1 if isinstance(key, rsa.RSAPublicKey) else fmt.SubjectPublicKeyInfo
    return key.public_bytes(serialization.Encoding.DER, form)


def key_hash(key: PublicKey, alg: str = "sha256") -> bytes:
    """KEYHASH as imgtool writes it: hashed with the image's hash algorithm (length varies)."""
    return hashlib.new(alg, public_key_der(key)).digest()


def key_kind(key: PublicKey) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = key.curve.name
        return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(curve, f"ecdsa-{curve}")
    return "ed25519"


# --- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """Outcome of :func:`verify_image`; ``reason`` is one line naming the first problem."""

    ok: bool
    hash_ok: bool
    hash_alg: str | None
    signature: SignatureStatus
    key_index: int | None
    reason: str
    computed_hash: bytes | None = None
    sig_type: str | None = None


def _check_hash(img: McubootImage) -> tuple[str | None, bytes | None, str | None]:
    """(algorithm, computed digest, problem or None) for the image's hash TLV."""
    tlv = img.hash_tlv()
    if tlv is None:
        return None, None, "no hash TLV (SHA256/SHA384/SHA512) in the TLV area"
    alg = HASH_TLVS[tlv.type]
    computed = hashlib.new(alg, img.hash_region).digest()
    if len(tlv.value) != len(computed):
        return alg, computed, f"{tlv.name} TLV is {len(tlv.value)} bytes, not {len(computed)}"
    if not hmac.compare_digest(tlv.value, computed):
        hint = "; the image is encrypted, its hash covers the plaintext"
        problem = f"hash mismatch: TLV says {_hex(tlv.value)} computed {_hex(computed)}"
        return alg, computed, problem + (hint if img.header.encrypted else "")
    return alg, computed, None


def _match_key(tlv: Tlv, ders: Sequence[bytes]) -> int | None:
    if tlv.type == TLV_KEYHASH:
        alg = {32: "sha256", 48: "sha384", 64: "sha512"}.get(len(tlv.value))
        if alg is None:
            return None
        ders = [hashlib.new(alg, der).digest() for der in ders]
    return next((i for i, der in enumerate(ders) if hmac.compare_digest(der, tlv.value)), None)


def _verify_sig(
    tlv: Tlv, key: PublicKey, img: McubootImage, digest: bytes | None, pure: bool
) -> tuple[bool, str]:
    """Check one signature TLV with the key its KEYHASH/PUBKEY picked: (valid, kind)."""
    kind = key_kind(key)
    sig, region = tlv.value, img.hash_region
    try:
        if tlv.type == TLV_ECDSA_SIG and isinstance(key, ec.EllipticCurvePublicKey):
            # imgtool signs the region with the curve's hash (the same as signing the digest);
            # --pad-sig appends zeros after the DER, which MCUboot ignores.
            if len(sig) >= 2 and sig[0] == 0x30 and sig[1] < 0x80:
                sig = sig[: sig[1] + 2]
            algo = hashes.SHA384() if kind == "ecdsa-p384" else hashes.SHA256()
            key.verify(sig, region, ec.ECDSA(algo))
        elif tlv.type in (TLV_RSA2048_PSS, TLV_RSA3072_PSS) and isinstance(key, rsa.RSAPublicKey):
            if kind != ("rsa-2048" if tlv.type == TLV_RSA2048_PSS else "rsa-3072"):
                return False, f"{tlv.name} TLV but the matching key is {kind}"
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            key.verify(sig, region, pss, hashes.SHA256())
        elif tlv.type == TLV_ED25519 and isinstance(key, ed25519.Ed25519PublicKey):
            # imgtool signs the image digest with Ed25519, or the whole region if "pure".
            message = region if pure else digest
            if message is None:
                return False, "ed25519 with no hash TLV"
            key.verify(sig, message)
            kind = "ed25519-pure" if pure else kind
        else:
            return False, f"{tlv.name} TLV but the matching key is {kind}"
    except (InvalidSignature, ValueError):
        return False, kind
    return True, kind


def _check_signatures(
    img: McubootImage, keys: Sequence[PublicKey], digest: bytes | None
) -> tuple[SignatureStatus, int | None, str | None, str]:
    """(status, key index, signature kind, reason), walking the TLVs as MCUboot does."""
    pure = any(t.type == TLV_SIG_PURE and t.value == b"\x01" for t in img.unprotected_tlvs)
    ders = [public_key_der(k) for k in keys]
    key_index: int | None = None
    key_label = ""
    bad: list[str] = []
    unknown: list[str] = []
    for tlv in img.unprotected_tlvs:
        if tlv.type in (TLV_KEYHASH, TLV_PUBKEY):
            key_index, key_label = _match_key(tlv, ders), f"{tlv.name} {_hex(tlv.value)}"
        elif tlv.type in SIGNATURE_TLVS:
            if key_index is None:  # MCUboot skips a signature whose key it does not know
                unknown.append(key_label or f"no KEYHASH/PUBKEY before {tlv.name}")
            else:
                valid, kind = _verify_sig(tlv, keys[key_index], img, digest, pure)
                if valid:
                    return "ok", key_index, kind, f"{kind} signature by trusted key {key_index}"
                bad.append(kind)
            key_index, key_label = None, ""
    if bad:
        return "bad", None, bad[0], f"bad signature ({bad[0]})"
    if unknown:
        return "unknown-key", None, None, f"signed by an unknown key ({unknown[0]})"
    return "no-signature", None, None, "no signature but trusted keys are configured"


def verify_image(
    image: bytes | bytearray | memoryview | McubootImage, keys: Sequence[PublicKey] = ()
) -> Verification:
    """Validate like MCUboot: the hash must match and, given keys, a signature must verify.

    Expected failures come back as a value; :class:`ImageError` is raised only for bytes
    that do not parse as an image at all.
    """
    img = image if isinstance(image, McubootImage) else parse_image(image)
    alg, digest, problem = _check_hash(img)
    hash_ok = problem is None
    if not keys:
        reason = problem or f"hash ok ({alg}); no trusted keys, signature not checked"
        return Verification(hash_ok, hash_ok, alg, "none", None, reason, digest)
    status, key_index, kind, sig_reason = _check_signatures(img, keys, digest)
    # A pure signature covers the same bytes as the hash, so MCUboot needs no hash TLV then.
    pure_ok = alg is None and kind == "ed25519-pure"
    ok = status == "ok" and (hash_ok or pure_ok)
    if ok:
        reason = f"hash ok ({alg}); {sig_reason}" if hash_ok else sig_reason
    else:
        reason = sig_reason if hash_ok or pure_ok or problem is None else problem
    return Verification(ok, hash_ok, alg, status, key_index, reason, digest, kind)


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
