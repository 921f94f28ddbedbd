"""Job documents' URLs: the presigned placeholder, presigned URLs and their expiry, the URL
policy (https, the host allowlist), and redaction of what a log may show.
"""

from __future__ import annotations

import pytest
from job_documents_kit import (
    NATIVE,
    PRESIGNED,
    SECRET,
    SEED,
    URL,
    with_,
)

from host_bridge.jobs.documents import (
    DocumentError,
    FirmwareJob,
    parse_document,
)
from host_bridge.redact import redact_text, redact_url
from host_bridge.urls import host_allowed, is_presigned, presigned_expiry, url_problem

# --- the presigned URL placeholder -------------------------------------------------------------


@pytest.mark.parametrize("variant", ["s3-presigned-url", "s3-presigned-url-v2"])
def test_unexpanded_placeholder_gives_the_inner_url(variant: str) -> None:
    doc = with_(NATIVE, url=f"${{aws:iot:{variant}:{URL}}}")
    job = parse_document(doc)
    assert isinstance(job, FirmwareJob) and job.url == URL and job.presigned


def test_placeholder_in_the_seed_form() -> None:
    job = parse_document(with_(SEED, bc_url=f" ${{aws:iot:s3-presigned-url:{URL}}} "))
    assert isinstance(job, FirmwareJob) and (job.url, job.presigned) == (URL, True)


def test_expanded_presigned_url_is_recognised_and_never_shown() -> None:
    job = parse_document(with_(NATIVE, url=PRESIGNED))
    assert isinstance(job, FirmwareJob) and job.url == PRESIGNED and job.presigned
    assert SECRET not in repr(job) and URL in repr(job)
    assert not parse_document(NATIVE).presigned  # type: ignore[union-attr]


def test_presigned_detection() -> None:
    assert is_presigned(PRESIGNED)
    assert is_presigned(f"{URL}?AWSAccessKeyId=AKIA&Expires=1700000000&Signature=abc")
    assert not is_presigned(URL) and not is_presigned(f"{URL}?version=3")


def test_presigned_expiry() -> None:
    assert presigned_expiry(PRESIGNED) == 1704067200 + 3600
    assert presigned_expiry(f"{URL}?AWSAccessKeyId=A&Expires=1700000000&Signature=s") == 1.7e9
    assert presigned_expiry(URL) is None
    assert presigned_expiry(f"{URL}?X-Amz-Date=yesterday&X-Amz-Expires=60") is None


# --- URL policy ---------------------------------------------------------------------------------


def test_plain_http_only_when_allowed() -> None:
    doc = with_(NATIVE, url="http://10.0.0.2:8000/fw.bin")
    with pytest.raises(DocumentError, match="plain http is allowed only with allow_http"):
        parse_document(doc)
    job = parse_document(doc, allow_http=True)
    assert isinstance(job, FirmwareJob) and job.url == "http://10.0.0.2:8000/fw.bin"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("fw-bucket.s3.eu-west-1.amazonaws.com", True),
        ("FW-Bucket.S3.amazonaws.com.", True),
        ("amazonaws.com", False),  # "*.x" needs a name below x
        ("evilamazonaws.com", False),
        ("amazonaws.com.evil.net", False),
        ("firmware.example.net", True),
        ("cdn.firmware.example.net", False),
    ],
)
def test_host_allowlist(host: str, allowed: bool) -> None:
    patterns = ["*.amazonaws.com", "firmware.example.net"]
    assert host_allowed(host, patterns) is allowed
    doc = with_(NATIVE, url=f"https://{host}/fw.bin")
    if allowed:
        assert isinstance(parse_document(doc, allowed_hosts=patterns), FirmwareJob)
    else:
        with pytest.raises(DocumentError, match=r"url host '.*' is not in allowed_hosts \(\*\.ama"):
            parse_document(doc, allowed_hosts=patterns)


def test_allowlist_given_as_one_string() -> None:
    assert host_allowed("a.amazonaws.com", "*.amazonaws.com")


def test_url_problem_is_none_for_good_urls() -> None:
    assert url_problem(URL) is None and url_problem(PRESIGNED) is None
    assert url_problem("https://[::1]:8443/fw.bin") is None


# --- redaction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (PRESIGNED, URL),
        ("https://user:pw@h.example:8443/a/b?x=1#frag", "https://h.example:8443/a/b"),
        ("https://h.example", "https://h.example"),
        ("https://[::1/fw.bin?sig=1", "https://[::1/fw.bin"),
        ("not a url?token=1", "not a url"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text() -> None:
    text = f"GET /app.bin?X-Amz-Signature={SECRET} failed for {PRESIGNED}: 'reset'"
    assert redact_text(text) == f"GET /app.bin failed for {URL}: 'reset'"
