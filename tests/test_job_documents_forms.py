"""Job documents: the three forms (the seed's, Nordic's, ours), other jobs, versions."""

from __future__ import annotations

from typing import Any

import pytest
from job_documents_kit import (
    H32,
    H64,
    NATIVE,
    NORDIC,
    SEED,
    URL,
    with_,
)

from host_bridge.jobs.documents import (
    FirmwareJob,
    OtherJob,
    parse_document,
)

# --- the three forms ----------------------------------------------------------------------------


def test_seed_document() -> None:
    job = parse_document(SEED)
    assert job == FirmwareJob(
        url=URL, source="seed", size=181124, md5=bytes.fromhex(H32), presigned=False
    )
    assert (job.sha256, job.version, job.image, job.signed) == (None, None, 0, None)


@pytest.mark.parametrize("idx", [0, 1, None, ...])
def test_seed_bc_idx_0_or_1_both_mean_image_0_secondary_slot(idx: object) -> None:
    job = parse_document(with_(SEED, bc_idx=idx))
    assert isinstance(job, FirmwareJob) and job.image == 0


def test_nordic_document() -> None:
    job = parse_document(NORDIC)
    assert job == FirmwareJob(
        url="https://fw-bucket.amazonaws.com/app.bin",
        source="nordic",
        size=181124,
        version="1.0.2",
    )


@pytest.mark.parametrize(
    ("loc", "url"),
    [
        ({"protocol": "https", "host": "h.example", "path": "a.bin"}, "https://h.example/a.bin"),
        (
            {"protocol": "HTTPS:", "host": "h.example", "path": "/d/a.bin"},
            "https://h.example/d/a.bin",
        ),
        ({"host": "h.example:8443", "path": "a.bin"}, "https://h.example:8443/a.bin"),
        ({"url": "${aws:iot:s3-presigned-url:https://h.example/a.bin}"}, "https://h.example/a.bin"),
    ],
)
def test_nordic_location_variants(loc: dict[str, str], url: str) -> None:
    job = parse_document(with_(NORDIC, location=loc))
    assert isinstance(job, FirmwareJob) and job.url == url


def test_nordic_size_and_version_are_optional() -> None:
    job = parse_document(with_(NORDIC, size=..., fwversion=...))
    assert isinstance(job, FirmwareJob) and (job.size, job.version) == (None, None)


def test_native_document() -> None:
    job = parse_document(NATIVE)
    assert job == FirmwareJob(
        url=URL,
        source="native",
        size=181124,
        sha256=bytes.fromhex(H64),
        md5=bytes.fromhex(H32),
        version="1.2.3+4",
        image=1,
        signed=True,
    )


def test_native_minimal_without_operation_and_with_nulls() -> None:
    doc = {"url": URL, "md5": H32.upper(), "size": None, "version": None, "signed": None}
    job = parse_document(doc)
    assert job == FirmwareJob(url=URL, source="native", md5=bytes.fromhex(H32))


def test_unknown_fields_are_tolerated() -> None:
    extra = {"comment": "rollout 7", "x": [1, {"y": None}], "afr_ota": {}}
    for doc in (SEED, NORDIC, NATIVE):
        assert parse_document({**doc, **extra}) == parse_document(doc)


@pytest.mark.parametrize(
    ("doc", "operation"),
    [
        ({"operation": "reboot"}, "reboot"),
        ({"operation": "install", "url": URL, "bc_url": 5}, "install"),  # no check of others' jobs
        ({}, None),
        ({"command": "blink", "times": 3}, None),
    ],
)
def test_other_jobs_go_to_the_handler(doc: dict[str, Any], operation: str | None) -> None:
    assert parse_document(doc) == OtherJob(operation, doc)


@pytest.mark.parametrize(
    ("version", "normalised"),
    [
        ("1.2.3", "1.2.3"),
        ("v0.0.1", "0.0.1"),
        ("V255.255.65535+4294967295", "255.255.65535+4294967295"),
        ("01.2.3+0", "1.2.3+0"),
    ],
)
def test_versions_are_normalised(version: str, normalised: str) -> None:
    job = parse_document(with_(NATIVE, version=version))
    assert isinstance(job, FirmwareJob) and job.version == normalised
