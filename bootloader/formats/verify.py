"""MCUboot image verification: check an image's hash and signatures on the host.

The bridge checks an image before it spends minutes uploading it over SMP, and reports the
same hash the device will report. The rules follow MCUboot's ``bootutil_img_validate``;
the image comes from :mod:`bootloader.formats.image`, the keys from
:mod:`bootloader.formats.keys`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from bootloader.formats.image import (
    HASH_TLVS,
    SIGNATURE_TLVS,
    TLV_ECDSA_SIG,
    TLV_ED25519,
    TLV_KEYHASH,
    TLV_PUBKEY,
    TLV_RSA2048_PSS,
    TLV_RSA3072_PSS,
    TLV_SIG_PURE,
    McubootImage,
    Tlv,
    parse_image,
)
from bootloader.formats.keys import PublicKey, key_kind, public_key_der

SignatureStatus: TypeAlias = Literal["none", "ok", "bad", "unknown-key", "no-signature"]


def _hex(value: bytes, n: int = 8) -> str:
    return value[:n].hex() + ("..." if len(value) > n else "")


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
