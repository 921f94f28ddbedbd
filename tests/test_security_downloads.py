"""Security properties of the bridge: downloads and the images they bring.

(c) plain HTTP downloads only with allow_http; (d) an image not signed by a trusted key never
reaches the device; (e) a presigned URL's query string never reaches a log record, an error or
statusDetails.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pytest
from https_server import HttpsServer, Pki, Route
from security_kit import daemon_rig, run_job
from security_kit import signing as signing
from security_kit import web_pki as web_pki

from fota_common.errors import DownloadError, ImageError
from host_bridge.image.download import Downloader
from host_bridge.image.prepare import load_trusted_keys, prepare
from host_bridge.jobs.documents import DocumentError, FirmwareJob, parse_document

pytestmark = pytest.mark.timeout(120)

SIGNATURE: Final = "d2hhdC1hLXNpZ25hdHVyZS1sb29rcy1saWtl"
QUERY: Final = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20300101%2Fs3"
    f"&X-Amz-Date=20300101T000000Z&X-Amz-Expires=3600&X-Amz-Signature={SIGNATURE}"
)


# -- (c) plain HTTP downloads only with allow_http ------------------------------------------------


class RecordingOpener:
    """An Opener that serves ``body`` (or redirects) and records every URL asked for."""

    def __init__(self, body: bytes = b"", redirect: str | None = None) -> None:
        self.body = body
        self.redirect = redirect
        self.urls: list[str] = []

    def __call__(self, url: str, headers: Mapping[str, str]) -> Any:
        self.urls.append(url)
        if self.redirect is not None and len(self.urls) == 1:
            return FakeResponse(302, b"", {"Location": self.redirect})
        return FakeResponse(200, self.body, {"Content-Length": str(len(self.body))})


class FakeResponse:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.reason, self._body, self._headers = status, "OK", body, headers

    def getheader(self, name: str) -> str | None:
        return self._headers.get(name)

    def read(self, amt: int) -> bytes:
        piece, self._body = self._body[:amt], self._body[amt:]
        return piece

    def close(self) -> None:
        pass


def job_for(url: str, data: bytes) -> FirmwareJob:
    return FirmwareJob(
        url=url, source="native", size=len(data), sha256=hashlib.sha256(data).digest()
    )


def test_http_job_documents_need_allow_http() -> None:
    doc = {"url": "http://h.example/fw.bin", "sha256": "ab" * 32}
    with pytest.raises(DocumentError, match=r"must be https:// \(plain http is allowed only"):
        parse_document(doc)
    job = parse_document(doc, allow_http=True)
    assert isinstance(job, FirmwareJob) and job.url == doc["url"]


def test_http_downloads_need_allow_http(tmp_path: Path) -> None:
    data = b"firmware" * 100
    job = job_for("http://h.example/fw.bin", data)
    opener = RecordingOpener(data)
    with pytest.raises(DownloadError, match=r"must be https://"):
        Downloader(opener=opener).fetch(job, tmp_path / "fw.bin")
    assert opener.urls == []  # refused before any request
    Downloader(opener=opener, allow_http=True).fetch(job, tmp_path / "fw.bin")
    assert opener.urls == [job.url]


def test_a_redirect_to_http_is_refused(tmp_path: Path) -> None:
    data = b"firmware" * 100
    opener = RecordingOpener(data, redirect="http://h.example/fw.bin")
    with pytest.raises(DownloadError, match=r"redirect target must be https://"):
        Downloader(opener=opener).fetch(job_for("https://h.example/fw.bin", data), tmp_path / "f")
    assert opener.urls == ["https://h.example/fw.bin"]


# -- (d) and (e): the daemon's job handling, against a fake Jobs service and a fake link ----------


def test_prepare_refuses_an_image_signed_by_an_untrusted_key(signing: dict[str, Any]) -> None:
    keys = load_trusted_keys([signing["trusted"]])
    with pytest.raises(ImageError, match=r"refused before upload: signed by an unknown key"):
        prepare(signing["untrusted"], trusted_keys=keys)
    assert prepare(signing["good"], trusted_keys=keys).version == "1.1.0"


def test_the_daemon_never_sends_an_untrusted_image(
    tmp_path: Path, signing: dict[str, Any], web_pki: Pki
) -> None:
    with (
        HttpsServer(web_pki) as server,
        daemon_rig(tmp_path / "state", signing, web_pki) as (
            bridge,
            links,
        ),
    ):
        image = signing["untrusted"]
        server.routes["/fw.bin"] = Route(body=image)
        doc = {"url": server.url("/fw.bin"), "sha256": hashlib.sha256(image).hexdigest()}
        jobs = run_job(bridge, doc)
        status, details = jobs.updates[-1]
        assert status == "FAILED" and "signed by an unknown key" in details["reason"]
        assert all(link.sent == [] for link in links)  # not a byte reached the device
        # The control: the trusted image does go to the device (which never answers here).
        image = signing["good"]
        server.routes["/fw.bin"] = Route(body=image)
        doc = {"url": server.url("/fw.bin"), "sha256": hashlib.sha256(image).hexdigest()}
        jobs = run_job(bridge, doc, "job-2")
        assert jobs.updates[-1][0] == "FAILED" and links and links[-1].sent


def assert_no_secret(texts: list[str]) -> None:
    for text in texts:
        assert "X-Amz-Signature" not in text and SIGNATURE not in text, text


def log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    fmt = logging.Formatter()
    out = []
    for record in caplog.records:
        out.append(record.getMessage())
        if record.exc_info:
            out.append(fmt.formatException(record.exc_info))
    return out


@pytest.mark.parametrize(
    "case", ["untrusted", "expired", "missing", "hash-mismatch", "http", "bad-host", "too-big"]
)
def test_presigned_urls_never_reach_logs_or_status_details(
    case: str,
    tmp_path: Path,
    signing: dict[str, Any],
    web_pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    image = signing["untrusted"]
    with (
        HttpsServer(web_pki) as server,
        daemon_rig(tmp_path / "state", signing, web_pki) as (
            bridge,
            _links,
        ),
    ):
        route = Route(body=image)
        server.routes["/fw.bin"] = route
        url, sha = server.url("/fw.bin", QUERY), hashlib.sha256(image).hexdigest()
        doc: dict[str, Any] = {"url": url, "sha256": sha}
        if case == "expired":
            route.expired_tokens.add(SIGNATURE)  # and every refreshed URL is the same one
        elif case == "missing":
            doc["url"] = server.url("/none.bin", QUERY)
        elif case == "hash-mismatch":
            doc["sha256"] = "00" * 32
        elif case == "http":
            doc["url"] = url.replace("https://", "http://")
        elif case == "bad-host":
            doc["url"] = url.replace("127.0.0.1", "user:pw@127.0.0.1")
        elif case == "too-big":
            doc["size"] = 1 << 20
        jobs = run_job(bridge, {"url": f"${{aws:iot:s3-presigned-url:{doc.pop('url')}}}", **doc})
        assert jobs.updates[-1][0] in ("FAILED", "REJECTED"), jobs.updates
        texts = [v for _s, d in jobs.updates for v in d.values()]
        texts += [reason for *_x, reason in bridge.store.history()]
        texts += log_texts(caplog)
        assert_no_secret(texts)
        if case not in ("http", "bad-host", "too-big"):
            assert any(s.query.endswith(SIGNATURE) for s in server.requests)  # it was used


def test_downloader_errors_and_logs_never_show_the_query(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"https://h.example/fw.bin?{QUERY}"
    data = b"x" * 1000

    class Failing(RecordingOpener):
        def __call__(self, u: str, headers: Mapping[str, str]) -> Any:
            self.urls.append(u)
            if len(self.urls) == 1:
                return FakeResponse(302, b"", {"Location": f"/moved.bin?{QUERY}"})
            raise OSError(f"connection to {u} reset")  # a transport error quoting the URL

    sleeps: list[float] = []
    with pytest.raises(DownloadError) as caught:
        Downloader(opener=Failing(), sleep=sleeps.append, retries=2).fetch(
            job_for(url, data), tmp_path / "fw.bin"
        )
    assert len(sleeps) == 2  # retried, each retry logged
    assert_no_secret([caught.value.reason, str(caught.value), *log_texts(caplog)])
