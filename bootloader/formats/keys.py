"""Public keys for MCUboot images: load them and derive what imgtool embeds.

:func:`load_public_key` reads the PEM or DER files imgtool writes; :func:`public_key_der`
and :func:`key_hash` give the bytes of the PUBKEY and KEYHASH TLVs; :func:`key_kind` names
the key's algorithm and size.
"""

from __future__ import annotations

import hashlib
from typing import Final, TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from fota_common.errors import ImageError

PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

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
