"""The downloader against a real local HTTPS server with a test CA: TLS, schemes, hosts and
redirects, size limits, hash checks and the cache."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import download_kit
import pytest
from download_kit import (
    IMAGE,
    PATH,
    Sleeps,
    downloader,
    job_for,
    leftovers,
)
from https_server import HttpsServer, Pki, Route

from fota_common.errors import DownloadError
from host_bridge.image.download import Downloader

pki = download_kit.pki  # the kit's fixture, bound here for pytest to find
server = download_kit.server  # the kit's fixture, bound here for pytest to find
sleeps = download_kit.sleeps  # the kit's fixture, bound here for pytest to find

pytestmark = pytest.mark.timeout(60)


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
