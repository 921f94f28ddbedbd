"""The downloader against a real local HTTPS server with a test CA, and against a fake opener."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from https_server import HttpsServer, Pki, Route, make_pki

from fota_common.errors import BridgeError, ConfigError, DownloadError
from host_bridge.image.download import Downloader, Response
from host_bridge.jobs.documents import FirmwareJob

pytestmark = pytest.mark.timeout(60)

IMAGE = bytes(range(256)) * 1200 + b"tail"  # 307204 bytes: several 64 KiB pieces
SECRET = "c2VjcmV0LXNpZ25hdHVyZQ"  # stands for an X-Amz-Signature: must never be shown
PATH = "/fw.bin"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server(pki: Pki) -> Iterator[HttpsServer]:
    with HttpsServer(pki) as srv:
        srv.routes[PATH] = Route(body=IMAGE)
        yield srv


class Sleeps(list[float]):
    """A fake sleep: remembers the delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def job_for(url: str, data: bytes = IMAGE, **fields: object) -> FirmwareJob:
    values: dict[str, object] = {
        "size": len(data),
        "sha256": hashlib.sha256(data).digest(),
        "md5": hashlib.md5(data).digest(),
    }
    values.update(fields)
    return FirmwareJob(url=url, source="native", **values)  # type: ignore[arg-type]


def presigned(token: str) -> str:
    return f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2Fx&X-Amz-Signature={token}"


def downloader(pki: Pki, sleeps: Sleeps, **options: object) -> Downloader:
    return Downloader(ca_file=pki.ca_cert, sleep=sleeps, backoff_s=0.5, **options)  # type: ignore[arg-type]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- TLS, schemes, hosts ------------------------------------------------------------------------


def test_https_with_the_test_ca(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    seen: list[tuple[int, int | None]] = []
    target = tmp_path / "fw.bin"
    result = downloader(pki, sleeps).fetch(
        job_for(server.url(PATH)), target, progress=lambda r, t: seen.append((r, t))
    )
    assert target.read_bytes() == IMAGE
    assert (result.size, result.sha256, result.from_cache) == (
        len(IMAGE),
        hashlib.sha256(IMAGE).digest(),
        False,
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert seen[-1] == (len(IMAGE), len(IMAGE))
    assert [r for r, _ in seen] == sorted(r for r, _ in seen)
    assert leftovers(tmp_path) == ["fw.bin"] and sleeps == []


def test_localhost_name_is_verified_too(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    downloader(pki, sleeps).fetch(job_for(server.url(PATH, host="localhost")), tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == IMAGE


def test_without_the_ca_the_certificate_is_refused(
    server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    with pytest.raises(
        DownloadError, match=r"certificate verification failed for 127\.0\.0\.1"
    ) as e:
        Downloader(sleep=sleeps).fetch(job_for(server.url(PATH)), tmp_path / "fw.bin")
    assert not e.value.transient and sleeps == []  # not retried: it will not get better
    assert server.requests == [] and leftovers(tmp_path) == []


def test_plain_http_refused_unless_allowed(sleeps: Sleeps, tmp_path: Path) -> None:
    with HttpsServer(None) as plain:
        plain.routes[PATH] = Route(body=IMAGE)
        job = job_for(plain.url(PATH))
        with pytest.raises(DownloadError, match=r"must be https:// \(plain http is allowed only"):
            Downloader(sleep=sleeps).fetch(job, tmp_path / "fw.bin")
        assert plain.requests == []
        Downloader(sleep=sleeps, allow_http=True).fetch(job, tmp_path / "fw.bin")
        assert (tmp_path / "fw.bin").read_bytes() == IMAGE


def test_host_allowlist(pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path) -> None:
    job = job_for(server.url(PATH))
    with pytest.raises(DownloadError, match=r"host '127\.0\.0\.1' is not in allowed_hosts"):
        downloader(pki, sleeps, allowed_hosts=["*.amazonaws.com"]).fetch(job, tmp_path / "a")
    assert server.requests == []
    downloader(pki, sleeps, allowed_hosts=["*.amazonaws.com", "127.0.0.1"]).fetch(
        job, tmp_path / "b"
    )
    assert (tmp_path / "b").read_bytes() == IMAGE


def test_redirects_are_followed_and_checked(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes["/moved"] = Route(redirect_to=server.url(PATH, host="localhost"))
    dl = downloader(pki, sleeps, allowed_hosts=["127.0.0.1"])
    with pytest.raises(DownloadError, match="redirect target host 'localhost' is not in"):
        dl.fetch(job_for(server.url("/moved")), tmp_path / "fw.bin")
    assert [r.path for r in server.requests] == ["/moved"]
    downloader(pki, sleeps).fetch(job_for(server.url("/moved")), tmp_path / "fw.bin")
    assert (tmp_path / "fw.bin").read_bytes() == IMAGE


# --- sizes --------------------------------------------------------------------------------------


def test_announced_length_differs_from_the_document(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes[PATH].content_length = len(IMAGE) + 100
    with pytest.raises(
        DownloadError,
        match=rf"is {len(IMAGE) + 100} bytes but the job document "
        rf"says {len(IMAGE)}",
    ):
        downloader(pki, sleeps).fetch(job_for(server.url(PATH)), tmp_path / "fw.bin")
    assert leftovers(tmp_path) == []


def test_announced_length_larger_than_the_slot(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    job = job_for(server.url(PATH), size=None)
    progress: list[int] = []
    with pytest.raises(DownloadError, match="slot holds at most 100000 bytes"):
        downloader(pki, sleeps, max_size=100_000).fetch(
            job, tmp_path / "fw.bin", progress=lambda r, t: progress.append(r)
        )
    assert progress == [] and leftovers(tmp_path) == []  # refused before reading the body


def test_document_size_larger_than_the_slot_is_refused_before_any_request(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    with pytest.raises(DownloadError, match=rf"image is {len(IMAGE)} bytes but the slot holds"):
        downloader(pki, sleeps, max_size=4096).fetch(job_for(server.url(PATH)), tmp_path / "f")
    assert server.requests == []


def test_more_bytes_than_announced_aborts_mid_stream(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    junk = 32 * 1024 * 1024
    server.routes[PATH] = Route(body=IMAGE, omit_length=True, trailing_junk=junk)
    seen: list[int] = []
    with pytest.raises(DownloadError, match=rf"sent more than the {len(IMAGE)} bytes the job"):
        downloader(pki, sleeps).fetch(
            job_for(server.url(PATH)), tmp_path / "fw.bin", progress=lambda r, t: seen.append(r)
        )
    assert max(seen) <= len(IMAGE)
    assert server.seen(PATH)[0].sent < len(IMAGE) + junk  # the client hung up early
    assert leftovers(tmp_path) == []


def test_no_length_anywhere_is_bounded_by_the_slot(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    server.routes[PATH] = Route(body=IMAGE, omit_length=True)
    job = job_for(server.url(PATH), size=None)
    with pytest.raises(DownloadError, match="sent more than the 200000 bytes the slot holds"):
        downloader(pki, sleeps, max_size=200_000).fetch(job, tmp_path / "fw.bin")
    downloader(pki, sleeps, max_size=len(IMAGE)).fetch(job, tmp_path / "fw.bin")
    assert (tmp_path / "fw.bin").read_bytes() == IMAGE


# --- hashes and the cache -----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["md5", "sha256"])
def test_hash_mismatch_leaves_nothing_behind(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path, field: str
) -> None:
    other = IMAGE[:-1] + b"X"
    wrong = {"md5": hashlib.md5(other).digest(), "sha256": hashlib.sha256(other).digest()}
    job = job_for(server.url(PATH), **{field: wrong[field]})
    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    name = {"md5": "MD5", "sha256": "SHA-256"}[field]
    with pytest.raises(
        DownloadError, match=rf"{name} mismatch: the download is [0-9a-f]+, the job"
    ):
        downloader(pki, sleeps, cache_dir=cache).fetch(job, out / "fw.bin")
    assert leftovers(out) == [] and leftovers(cache) == []


def test_cache_hit_makes_no_request(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    job = job_for(server.url(PATH))
    downloader(pki, sleeps, cache_dir=cache).fetch(job, tmp_path / "first.bin")
    cached = cache / f"{hashlib.sha256(IMAGE).hexdigest()}.bin"
    assert leftovers(cache) == [cached.name] and cached.read_bytes() == IMAGE
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    before = len(server.requests)
    progress: list[tuple[int, int | None]] = []
    result = downloader(pki, sleeps, cache_dir=cache).fetch(
        job, tmp_path / "second.bin", progress=lambda r, t: progress.append((r, t))
    )
    assert result.from_cache and len(server.requests) == before
    assert (tmp_path / "second.bin").read_bytes() == IMAGE
    assert stat.S_IMODE((tmp_path / "second.bin").stat().st_mode) == 0o600
    assert progress == [(len(IMAGE), len(IMAGE))]


def test_damaged_cache_entry_is_replaced(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = cache / f"{hashlib.sha256(IMAGE).hexdigest()}.bin"
    cached.write_bytes(b"bit rot")
    result = downloader(pki, sleeps, cache_dir=cache).fetch(
        job_for(server.url(PATH)), tmp_path / "fw.bin"
    )
    assert not result.from_cache and len(server.requests) == 1
    assert cached.read_bytes() == IMAGE


def test_no_cache_lookup_without_a_sha256(
    pki: Pki, server: HttpsServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    job = job_for(server.url(PATH), sha256=None)
    for _ in range(2):
        downloader(pki, sleeps, cache_dir=cache).fetch(job, tmp_path / "fw.bin")
    assert len(server.requests) == 2  # stored by its SHA-256, but the document names only MD5
    assert leftovers(cache) == [f"{hashlib.sha256(IMAGE).hexdigest()}.bin"]


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
