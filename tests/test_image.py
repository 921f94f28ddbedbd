"""The image codec against images made by the real imgtool, and against damaged ones."""

from __future__ import annotations

import json
import random
import struct
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imgtool_util import (
    dumpinfo,
    getpub_pem,
    getpub_raw,
    getpubhash,
    imgtool,
    keygen,
    sign,
)

from bootloader.formats.image import (
    IMAGE_MAGIC,
    TLV_ECDSA_SIG,
    TLV_ED25519,
    TLV_KEYHASH,
    TLV_RSA2048_PSS,
    TLV_SEC_CNT,
    TLV_SHA256,
    ImageError,
    ImageHeader,
    ImageVersion,
    McubootImage,
    describe,
    parse_image,
)
from bootloader.formats.keys import PublicKey, key_hash, load_public_key, public_key_der
from bootloader.formats.verify import Verification, verify_image

PAYLOAD = random.Random(20240601).randbytes(3000)
HDR = 0x200
SLOT = 0x20000
SIGNERS = ("ecdsa-p256", "ed25519", "rsa-2048")
SIG_TLV = {"ecdsa-p256": TLV_ECDSA_SIG, "ed25519": TLV_ED25519, "rsa-2048": TLV_RSA2048_PSS}

# variant -> (key name or None, extra imgtool sign flags, version)
VARIANTS: dict[str, tuple[str | None, tuple[str, ...], str]] = {
    "ecdsa-p256": ("ecdsa-p256", (), "1.2.3"),
    "ed25519": ("ed25519", (), "1.2.3"),
    "rsa-2048": ("rsa-2048", (), "1.2.3"),
    "hash-only": (None, (), "1.2.3+7"),
    "protected": ("ecdsa-p256", ("--security-counter", "auto"), "1.2.3"),
    "padded": ("ecdsa-p256", ("--security-counter", "auto", "--pad", "--confirm"), "1.2.3"),
    "ed25519-pure": ("ed25519", ("--pure",), "1.2.3"),
    "ed25519-sha512": ("ed25519", ("--sha", "512"), "1.2.3"),
    "ecdsa-pubkey": ("ecdsa-p256", ("--public-key-format", "full"), "1.2.3"),
    "ecdsa-p384": ("ecdsa-p384", (), "1.2.3"),
    "rsa-3072": ("rsa-3072", (), "1.2.3"),
}


class Kit:
    """Keys and signed images, made by imgtool on first use and shared by the module."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._keys: dict[str, Path] = {}
        self._images: dict[str, Path] = {}
        self._public: dict[str, PublicKey] = {}

    def key_file(self, name: str) -> Path:
        """``name`` is a key type, optionally "#n" for another key of that type."""
        if name not in self._keys:
            key_type = name.split("#")[0]
            self._keys[name] = keygen(self.dir, key_type, name.replace("#", "-"))
        return self._keys[name]

    def public(self, name: str) -> PublicKey:
        if name not in self._public:
            self._public[name] = load_public_key(self.key_file(name).read_bytes())
        return self._public[name]

    def path(self, variant: str) -> Path:
        if variant not in self._images:
            key, extra, version = VARIANTS[variant]
            key_path = self.key_file(key) if key else None
            self._images[variant] = sign(
                self.dir, PAYLOAD, key_path, name=variant, version=version, extra=extra
            )
        return self._images[variant]

    def data(self, variant: str) -> bytes:
        return self.path(variant).read_bytes()


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    return Kit(tmp_path_factory.mktemp("image"))


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def value_offset(data: bytes, img: McubootImage, tlv_type: int) -> int:
    """File offset of a TLV's value (values of hashes and signatures are unique in the file)."""
    value = img.find(tlv_type)[0].value
    return data.rindex(value)


# --- versions and headers ---------------------------------------------------------------------


def test_version_strings_follow_zephyr_and_imgtool() -> None:
    assert str(ImageVersion(1, 2, 3)) == "1.2.3"
    assert str(ImageVersion(1, 2, 3, 4)) == "1.2.3.4"  # Zephyr's img_mgmt_ver_str
    assert ImageVersion(1, 2, 3).semver == "1.2.3+0"  # imgtool dumpinfo's form
    assert ImageVersion.parse("1.2.3+4") == ImageVersion(1, 2, 3, 4)
    assert ImageVersion.parse("1.2.3.4") == ImageVersion(1, 2, 3, 4)
    assert ImageVersion.parse("1.2.3") == ImageVersion(1, 2, 3, 0)
    assert ImageVersion.parse("2") == ImageVersion(2, 0, 0, 0)
    assert ImageVersion.parse("255.255.65535+4294967295").pack() == b"\xff" * 8
    assert ImageVersion(1, 2, 3) < ImageVersion(1, 2, 3, 1) < ImageVersion(1, 3, 0)


@pytest.mark.parametrize("text", ["", "1.2.3-rc1", "v1.2.3", "1..2", "256.0.0", "1.2.65536"])
def test_bad_version_strings(text: str) -> None:
    with pytest.raises(ImageError) as err:
        ImageVersion.parse(text)
    assert err.value.code == "bad-version"


def test_header_pack_parse_round_trip() -> None:
    header = ImageHeader(IMAGE_MAGIC, 0x2000_0000, 0x200, 12, 3000, 0x20, ImageVersion(1, 2, 3, 4))
    packed = header.pack()
    assert len(packed) == 32
    assert ImageHeader.parse(packed) == header
    assert header.flag_names == ("RAM_LOAD",)


# --- images signed by imgtool -----------------------------------------------------------------


@pytest.mark.parametrize("signer", SIGNERS)
def test_signed_image_verifies_with_its_key(kit: Kit, signer: str) -> None:
    img = parse_image(kit.data(signer))
    assert img.version == ImageVersion(1, 2, 3)
    assert img.body == PAYLOAD
    assert img.header.hdr_size == HDR and img.header.img_size == len(PAYLOAD)
    assert img.data[32:HDR] == b"\xff" * (HDR - 32)  # --pad-header fills with the erased value
    assert [t.type for t in img.tlvs] == [TLV_SHA256, TLV_KEYHASH, SIG_TLV[signer]]
    assert img.total_size == len(kit.data(signer)) and img.trailing == 0

    result = verify_image(img, [kit.public(signer)])
    assert result.ok and result.hash_ok and result.signature == "ok", result.reason
    assert (result.hash_alg, result.key_index, result.sig_type) == ("sha256", 0, signer)
    assert result.computed_hash == img.sha256_tlv

    # The matching key is found among several trusted keys.
    other = kit.public(f"{signer}#2")
    assert verify_image(img, [other, kit.public(signer)]).key_index == 1


@pytest.mark.parametrize(
    "variant", ["ecdsa-p256", "ed25519", "rsa-2048", "hash-only", "protected", "padded"]
)
def test_listing_agrees_with_imgtool_dumpinfo(kit: Kit, variant: str) -> None:
    img = parse_image(kit.data(variant))
    info = dumpinfo(kit.path(variant))
    header, area = info["header"], info["tlv_area"]
    h = img.header
    assert (header["magic"], header["load_addr"], header["flags"]) == (h.magic, h.load_addr, 0)
    assert (header["hdr_size"], header["img_size"]) == (h.hdr_size, h.img_size)
    assert header["protected_tlv_size"] == h.protect_tlv_size
    assert header["version"] == img.version.semver
    theirs = [(t["type"], t["len"], t["data"]) for t in area["tlvs_prot"] + area["tlvs"]]
    ours = [(t.type, len(t.value), t.value.hex()) for t in img.tlvs]
    assert ours == theirs
    assert [t.protected for t in img.tlvs] == [True] * len(area["tlvs_prot"]) + [False] * len(
        area["tlvs"]
    )
    unprotected_start = h.hdr_size + h.img_size + h.protect_tlv_size
    assert area["tlv_hdr"]["tlv_tot"] == img.total_size - unprotected_start
    assert img.sha256_tlv is not None
    assert describe(img)["hash"] == img.sha256_tlv.hex()


@pytest.mark.parametrize("variant", ["ecdsa-p256", "ed25519", "rsa-2048"])
def test_hash_agrees_with_imgtool_verify(kit: Kit, variant: str) -> None:
    out = imgtool("verify", "-k", kit.key_file(variant), kit.path(variant))
    digest = next(line.split(":")[1].strip() for line in out.splitlines() if "digest" in line)
    assert parse_image(kit.data(variant)).sha256_tlv == bytes.fromhex(digest)


def test_hash_only_image(kit: Kit) -> None:
    img = parse_image(kit.data("hash-only"))
    assert str(img.version) == "1.2.3.7" and img.version.semver == "1.2.3+7"
    assert [t.type for t in img.tlvs] == [TLV_SHA256]
    result = verify_image(img)
    assert result.ok and result.signature == "none" and result.key_index is None
    with_keys = verify_image(img, [kit.public("ecdsa-p256")])
    assert not with_keys.ok and with_keys.hash_ok
    assert with_keys.signature == "no-signature"
    assert with_keys.reason == "no signature but trusted keys are configured"


def test_protected_tlvs_and_padded_slot(kit: Kit) -> None:
    img = parse_image(kit.data("protected"))
    assert [(t.type, t.protected) for t in img.protected_tlvs] == [(TLV_SEC_CNT, True)]
    assert img.security_counter == (1 << 24) | (2 << 16) | 3  # imgtool's "auto"
    assert img.header.protect_tlv_size == 12
    assert len(img.hash_region) == HDR + len(PAYLOAD) + 12

    padded = kit.data("padded")
    assert len(padded) == SLOT
    slot = parse_image(padded)
    assert (slot.header, slot.protected_tlvs) == (img.header, img.protected_tlvs)
    assert slot.sha256_tlv == img.sha256_tlv  # same hashed bytes; only the signature differs
    assert slot.trailing == SLOT - slot.total_size
    assert verify_image(padded, [kit.public("ecdsa-p256")]).ok
    assert verify_image(kit.data("ecdsa-p256") + b"\x00" * 7, [kit.public("ecdsa-p256")]).ok


@pytest.mark.parametrize(
    ("variant", "signer", "sig_type", "hash_alg"),
    [
        ("ed25519-pure", "ed25519", "ed25519-pure", "sha512"),
        ("ed25519-sha512", "ed25519", "ed25519", "sha512"),
        ("ecdsa-pubkey", "ecdsa-p256", "ecdsa-p256", "sha256"),
        ("ecdsa-p384", "ecdsa-p384", "ecdsa-p384", "sha384"),
        ("rsa-3072", "rsa-3072", "rsa-3072", "sha256"),
    ],
)
def test_other_imgtool_modes(
    kit: Kit, variant: str, signer: str, sig_type: str, hash_alg: str
) -> None:
    result = verify_image(kit.data(variant), [kit.public(f"{signer}#2"), kit.public(signer)])
    assert result.ok, result.reason
    assert (result.sig_type, result.hash_alg, result.key_index) == (sig_type, hash_alg, 1)
    assert not verify_image(kit.data(variant), [kit.public(f"{signer}#2")]).ok


def test_keyhash_uses_the_image_hash_algorithm(kit: Kit) -> None:
    img = parse_image(kit.data("ed25519-sha512"))
    assert img.find(TLV_KEYHASH)[0].value == key_hash(kit.public("ed25519"), "sha512")


# --- damage -----------------------------------------------------------------------------------


def damage_offsets(data: bytes) -> dict[str, int]:
    img = parse_image(data)
    end_of_body = HDR + len(PAYLOAD)
    return {
        "header version": 20,
        "header padding": 0x100,
        "body": HDR + 1000,
        "protected TLV value": end_of_body + 8,
        "hash TLV value": value_offset(data, img, TLV_SHA256) + 5,
    }


@pytest.mark.parametrize(
    "where", ["header version", "header padding", "body", "protected TLV value", "hash TLV value"]
)
def test_flipped_byte_breaks_the_hash(kit: Kit, where: str) -> None:
    data = kit.data("protected")
    bad = flip(data, damage_offsets(data)[where])
    result = verify_image(bad, [kit.public("ecdsa-p256")])
    assert not result.ok and not result.hash_ok
    assert result.reason.startswith("hash mismatch: TLV says "), result.reason
    assert "\n" not in result.reason
    assert not verify_image(bad).ok  # hash-only checking catches it too


@pytest.mark.parametrize("signer", SIGNERS)
def test_flipped_signature_byte(kit: Kit, signer: str) -> None:
    data = kit.data(signer)
    offset = value_offset(data, parse_image(data), SIG_TLV[signer])
    result = verify_image(flip(data, offset + 20), [kit.public(signer)])
    assert result.hash_ok and not result.ok
    assert result.signature == "bad"
    assert result.reason == f"bad signature ({signer})"


def test_flipped_keyhash_means_unknown_key(kit: Kit) -> None:
    data = kit.data("ecdsa-p256")
    bad = flip(data, value_offset(data, parse_image(data), TLV_KEYHASH))
    result = verify_image(bad, [kit.public("ecdsa-p256")])
    assert result.signature == "unknown-key" and not result.ok
    assert result.reason.startswith("signed by an unknown key (KEYHASH ")


@pytest.mark.parametrize("signer", SIGNERS)
def test_wrong_key(kit: Kit, signer: str) -> None:
    for wrong in (f"{signer}#2", "ecdsa-p256#2", "rsa-2048#2"):
        result = verify_image(kit.data(signer), [kit.public(wrong)])
        assert not result.ok and result.signature == "unknown-key", result


def test_keyhash_of_a_trusted_key_over_a_foreign_signature_is_bad(kit: Kit) -> None:
    data = kit.data("ecdsa-p256")
    img = parse_image(data)
    offset = value_offset(data, img, TLV_KEYHASH)
    impostor = kit.public("ecdsa-p256#2")
    forged = data[:offset] + key_hash(impostor) + data[offset + 32 :]
    result = verify_image(forged, [impostor])
    assert (result.signature, result.reason) == ("bad", "bad signature (ecdsa-p256)")


def test_truncated_images(kit: Kit) -> None:
    data = kit.data("protected")
    with pytest.raises(ImageError) as err:
        parse_image(data[:1000])
    assert err.value.code == "truncated"
    assert str(err.value) == (
        "truncated: header says 3000 bytes of body after a 512-byte header "
        "but the data ends at 1000"
    )
    for cut in (10, HDR + len(PAYLOAD), HDR + len(PAYLOAD) + 6, len(data) - 1):
        with pytest.raises(ImageError) as err:
            verify_image(data[:cut])
        assert err.value.code == "truncated", str(err.value)
        assert str(err.value).startswith("truncated: ")


def test_bad_magic(kit: Kit) -> None:
    data = struct.pack("<I", 0x12345678) + kit.data("ecdsa-p256")[4:]
    with pytest.raises(ImageError) as err:
        parse_image(data)
    assert err.value.code == "bad-magic"
    assert str(err.value) == "bad image magic 0x12345678 (expected 0x96f3b83d)"
    with pytest.raises(ImageError, match="erased flash"):
        parse_image(b"\xff" * 4096)


def test_damaged_tlv_areas(kit: Kit) -> None:
    data = kit.data("protected")
    prot = HDR + len(PAYLOAD)
    unprot = prot + 12
    cases = {
        "bad-tlv-magic": [flip(data, unprot), flip(data, prot)],
        "bad-tlv": [
            data[:10] + struct.pack("<H", 16) + data[12:],  # header disagrees with the area
            data[:10] + struct.pack("<H", 0) + data[12:],  # protected area the header denies
            data[: unprot + 2] + struct.pack("<H", 2) + data[unprot + 4 :],  # tot < 4
            data[: unprot + 6] + b"\xff\xff" + data[unprot + 8 :],  # TLV longer than area
        ],
    }
    for code, images in cases.items():
        for image in images:
            with pytest.raises(ImageError) as err:
                parse_image(image)
            assert err.value.code == code, str(err.value)
            assert "\n" not in str(err.value)


# --- keys and reporting -----------------------------------------------------------------------


@pytest.mark.parametrize("signer", SIGNERS)
def test_key_loading_and_imgtool_key_encodings(kit: Kit, signer: str) -> None:
    path = kit.key_file(signer)
    key = load_public_key(path.read_bytes())
    assert public_key_der(key) == getpub_raw(path)  # PKCS#1 for RSA, SPKI otherwise
    assert key_hash(key) == getpubhash(path)
    for encoded in (getpub_pem(path), getpub_raw(path)):
        assert public_key_der(load_public_key(encoded)) == public_key_der(key)


def test_unusable_keys(kit: Kit) -> None:
    with pytest.raises(ImageError) as err:
        load_public_key(b"not a key")
    assert err.value.code == "bad-key"
    with pytest.raises(ImageError, match="unsupported key type"):
        load_public_key(kit.key_file("x25519").read_bytes())


def test_describe_is_json_ready(kit: Kit) -> None:
    img = parse_image(kit.data("padded"))
    summary = json.loads(json.dumps(describe(img)))
    assert summary["version"] == "1.2.3" and summary["version_semver"] == "1.2.3+0"
    assert [t["name"] for t in summary["tlvs"]] == ["SEC_CNT", "SHA256", "KEYHASH", "ECDSA_SIG"]
    assert summary["tlvs"][0]["protected"] is True
    assert img.sha256_tlv is not None and summary["hash"] == img.sha256_tlv.hex()
    assert (summary["hdr_size"], summary["img_size"]) == (HDR, len(PAYLOAD))
    assert summary["flag_names"] == [] and summary["security_counter"] == 0x01020003
    assert summary["trailing_bytes"] == SLOT - img.total_size


# --- robustness -------------------------------------------------------------------------------


def check_only_image_error(kit: Kit, data: bytes) -> None:
    keys = [kit.public(name) for name in SIGNERS]
    for trusted in ((), keys):
        try:
            result = verify_image(data, trusted)
        except ImageError as err:
            assert err.code and "\n" not in str(err)
            continue
        assert isinstance(result, Verification) and "\n" not in result.reason
        describe(parse_image(data))


@settings(max_examples=300, deadline=timedelta(seconds=5))
@given(
    variant=st.sampled_from(["protected", "ed25519", "rsa-2048", "hash-only"]),
    edits=st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 2**16),
    tail=st.binary(max_size=16),
)
def test_mutated_images_raise_only_image_error(
    kit: Kit, variant: str, edits: list[tuple[int, int]], cut: int | None, tail: bytes
) -> None:
    data = bytearray(kit.data(variant))
    # Bias edits towards the header and the TLV areas, where the structure lives.
    hot = [*range(32), *range(HDR + len(PAYLOAD), len(data))]
    for where, value in edits:
        data[hot[where % len(hot)]] = value
    check_only_image_error(kit, bytes(data[:cut]) + tail)


@settings(max_examples=300, deadline=timedelta(seconds=5))
@given(
    body=st.binary(max_size=600),
    magic=st.booleans(),
)
def test_random_bytes_raise_only_image_error(kit: Kit, body: bytes, magic: bool) -> None:
    check_only_image_error(kit, (struct.pack("<I", IMAGE_MAGIC) if magic else b"") + body)
