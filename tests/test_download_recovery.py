"""The downloader recovering against a real local HTTPS server with a test CA: dropped
connections resumed with Range, bounded retries, presigned URLs refreshed on expiry with their
query strings kept out of errors and logs; and against a fake opener."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import download_kit
import pytest
from download_kit import (
    IMAGE,
    PATH,
    SECRET,
    Sleeps,
    downloader,
    job_for,
    leftovers,
    presigned,
)
from https_server import HttpsServer, Pki, Route

from fota_common.errors import BridgeError, ConfigError, DownloadError
from host_bridge.image.download import Downloader, Response

pki = download_kit.pki  # the kit's fixture, bound here for pytest to find
server = download_kit.server  # the kit's fixture, bound here for pytest to find
sleeps = download_kit.sleeps  # the kit's fixture, bound here for pytest to find

pytestmark = pytest.mark.timeout(60)


# --- dropped connections ------------------------------------------------------------------------


def test_range_resume_after_a_drop(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes[PATH].drop_after = 100_000
    result = downloader(pki, sleeps).fetch(job_for(server.url(PATH)), tmp_path / "fw.bin")
    assert (tmp_path / "fw.bin").read_bytes() == IMAGE
    first, second = server.seen(PATH)
    assert (first.range, first.status) == (None, 200)
    assert (second.range, second.status) == ("bytes=100000-", 206)
    assert result.resumes == 1 and sleeps == [0.5]


def test_a_server_that_ignores_range_is_read_again_from_the_start(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes[PATH] = Route(body=IMAGE, honour_range=False, drop_after=150_000)
    progress: list[int] = []
    downloader(pki, sleeps).fetch(
        job_for(server.url(PATH)), tmp_path / "fw.bin", progress=lambda r, t: progress.append(r)
    )
    assert (tmp_path / "fw.bin").read_bytes() == IMAGE
    assert [r.status for r in server.seen(PATH)] == [200, 200]
    assert server.seen(PATH)[1].range == "bytes=150000-"
    assert 0 in progress  # the restart was reported


def test_several_drops_each_resume_where_the_last_stopped(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes[PATH] = Route(body=IMAGE, drop_after=70_000, drops=4)
    result = downloader(pki, sleeps, retries=2).fetch(
        job_for(server.url(PATH)), tmp_path / "fw.bin"
    )
    assert (tmp_path / "fw.bin").read_bytes() == IMAGE
    assert [r.range for r in server.seen(PATH)] == [
        None,
        "bytes=70000-",
        "bytes=140000-",
        "bytes=210000-",
        "bytes=280000-",
    ]
    assert result.resumes == 4 and sleeps == [0.5] * 4  # progress resets the backoff


def test_retries_are_bounded_with_backoff(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes[PATH] = Route(body=IMAGE, drop_after=0, drops=100)
    with pytest.raises(
        DownloadError, match=r"failed after 4 attempts: connection closed after 0"
    ) as e:
        downloader(pki, sleeps, retries=3, max_backoff_s=1.5).fetch(
            job_for(server.url(PATH)), tmp_path / "fw.bin"
        )
    assert e.value.transient and sleeps == [0.5, 1.0, 1.5]
    assert len(server.seen(PATH)) == 4 and leftovers(tmp_path) == []


def test_server_errors_are_retried(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes[PATH] = Route(body=IMAGE, status=503, status_times=2)
    downloader(pki, sleeps).fetch(job_for(server.url(PATH)), tmp_path / "fw.bin")
    assert [r.status for r in server.seen(PATH)] == [503, 503, 200]
    assert sleeps == [0.5, 1.0]


# --- presigned URLs -----------------------------------------------------------------------------


def test_expired_presigned_url_is_refreshed_once(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes[PATH].expired_tokens.add("old")
    calls: list[str] = []

    def refresh() -> str:
        calls.append("refresh")
        return server.url(PATH, presigned("new"))

    job = job_for(server.url(PATH, presigned("old")), presigned=True)
    result = downloader(pki, sleeps).fetch(job, tmp_path / "fw.bin", refresh_url=refresh)
    assert (tmp_path / "fw.bin").read_bytes() == IMAGE
    assert calls == ["refresh"] and result.refreshes == 1
    assert [(r.token, r.status) for r in server.seen(PATH)] == [("old", 403), ("new", 200)]


def test_expiry_in_the_middle_of_a_download_resumes_with_the_new_url(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes[PATH] = Route(body=IMAGE, drop_after=120_000, single_use_tokens=True)
    tokens = iter(["second", "third"])
    job = job_for(server.url(PATH, presigned("first")), presigned=True)
    result = downloader(pki, sleeps).fetch(
        job, tmp_path / "fw.bin", refresh_url=lambda: server.url(PATH, presigned(next(tokens)))
    )
    assert (tmp_path / "fw.bin").read_bytes() == IMAGE
    assert [(r.token, r.range, r.status) for r in server.seen(PATH)] == [
        ("first", None, 200),
        ("first", "bytes=120000-", 403),
        ("second", "bytes=120000-", 206),
    ]
    assert result.refreshes == 1


def test_a_url_past_its_x_amz_expires_is_refreshed_before_asking(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    stale = "X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&" + presigned("stale")
    fresh = "X-Amz-Date=20240101T020000Z&X-Amz-Expires=3600&" + presigned("fresh")
    now = 1704067200 + 2 * 3600 + 60  # 2024-01-01 02:01 UTC
    job = job_for(server.url(PATH, stale), presigned=True)
    downloader(pki, sleeps, now=lambda: now).fetch(
        job, tmp_path / "fw.bin", refresh_url=lambda: server.url(PATH, fresh)
    )
    assert [r.token for r in server.requests] == ["fresh"]


def test_expired_without_a_way_to_refresh(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes[PATH].expired_tokens.add(SECRET)
    job = job_for(server.url(PATH, presigned(SECRET)), presigned=True)
    with pytest.raises(DownloadError, match=r"has expired .* no way to ask for a new one") as e:
        downloader(pki, sleeps).fetch(job, tmp_path / "fw.bin")
    assert e.value.transient and SECRET not in str(e.value)


def test_refreshing_is_bounded(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes[PATH].expired_tokens.add("old")
    job = job_for(server.url(PATH, presigned("old")), presigned=True)
    with pytest.raises(DownloadError, match="expired again after 2 refreshes"):
        downloader(pki, sleeps, max_refreshes=2).fetch(
            job, tmp_path / "fw.bin", refresh_url=lambda: job.url
        )
    assert len(server.requests) == 3


def test_forbidden_is_not_mistaken_for_expiry(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes[PATH].status = 403
    job = job_for(server.url(PATH, presigned(SECRET)), presigned=True)
    with pytest.raises(DownloadError) as e:
        downloader(pki, sleeps).fetch(
            job, tmp_path / "fw.bin", refresh_url=lambda: pytest.fail("refreshed")
        )
    assert str(e.value) == f"HTTP 403 Forbidden (AccessDenied) from {server.url(PATH)}"
    assert not e.value.transient and len(server.requests) == 1


def test_query_strings_never_reach_errors_or_logs(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.routes[PATH] = Route(body=IMAGE, drop_after=50_000, single_use_tokens=True)
    server.routes["/gone"] = Route(status=404)
    refreshed = iter([f"{SECRET}2", f"{SECRET}3"])
    job = job_for(server.url(PATH, presigned(SECRET)), presigned=True)
    downloader(pki, sleeps, cache_dir=tmp_path / "cache").fetch(
        job,
        tmp_path / "fw.bin",
        refresh_url=lambda: server.url(PATH, presigned(next(refreshed))),
    )
    errors: list[BridgeError] = []
    for url in (
        server.url("/gone", presigned(SECRET)),
        server.url(PATH, presigned(SECRET)).replace("https:", "http:"),
        f"https://user:{SECRET}@127.0.0.1:{server.port}{PATH}",
    ):
        with pytest.raises(DownloadError) as e:
            downloader(pki, sleeps).fetch(job_for(url), tmp_path / "x.bin")
        errors.append(e.value)
    server.routes[PATH] = Route(body=IMAGE, drop_after=0, drops=10)
    with pytest.raises(DownloadError) as e:
        downloader(pki, sleeps, retries=1).fetch(
            job_for(server.url(PATH, presigned(SECRET))), tmp_path / "x.bin"
        )
    errors.append(e.value)
    assert "downloaded" in caplog.text and "interrupted" in caplog.text
    assert "expired" in caplog.text and "GET" in caplog.text
    for text in [caplog.text, *map(str, errors)]:
        assert SECRET not in text and "X-Amz" not in text


# --- the opener is injectable -------------------------------------------------------------------


class FakeResponse:
    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status, self.reason, self._headers, self._body = status, "", headers, body

    def getheader(self, name: str) -> str | None:
        return self._headers.get(name)

    def read(self, amt: int) -> bytes:
        piece, self._body = self._body[:amt], self._body[amt:]
        return piece

    def close(self) -> None:
        pass


def test_a_206_that_starts_elsewhere_means_starting_over(sleeps: Sleeps, tmp_path: Path) -> None:
    data = os.urandom(1000)
    asked: list[str | None] = []
    replies = [
        FakeResponse(200, {"Content-Length": "1000"}, data[:400]),  # dropped at 400
        FakeResponse(206, {"Content-Range": "bytes 300-999/1000"}, data[300:]),  # wrong place
        FakeResponse(200, {"Content-Length": "1000"}, data),
    ]

    def opener(url: str, headers: Mapping[str, str]) -> Response:
        asked.append(headers.get("Range"))
        return replies.pop(0)

    Downloader(opener=opener, sleep=sleeps).fetch(
        job_for("https://firmware.example/fw.bin", data), tmp_path / "fw.bin"
    )
    assert (tmp_path / "fw.bin").read_bytes() == data
    assert asked == [None, "bytes=400-", None]


def test_the_slot_size_can_be_given_per_fetch(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    dl = downloader(pki, sleeps, max_size=len(IMAGE))
    with pytest.raises(DownloadError, match="slot holds at most 4096 bytes"):
        dl.fetch(job_for(server.url(PATH)), tmp_path / "fw.bin", max_size=4096)
    dl.fetch(job_for(server.url(PATH)), tmp_path / "fw.bin")
    assert server.requests and (tmp_path / "fw.bin").read_bytes() == IMAGE


def test_an_unreadable_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot use CA file"):
        Downloader(ca_file=tmp_path / "missing.pem")
