"""Fetch a job's firmware image over HTTPS: verified TLS, bounded size, hashes checked, resumable.

HTTP is the standard library's http.client (see :mod:`host_bridge.image.http` for why), behind
an injectable :class:`Opener`; retries, Range, redirects, URL refresh and checks live here; the
cache of images already downloaded is :mod:`host_bridge.image.cache`.

Nothing holds the whole image in memory: it is streamed to ``<target>.part`` in 64 KiB pieces,
hashed on the way, checked, then renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final
from urllib.parse import urljoin, urlsplit

from fota_common.errors import DownloadError
from host_bridge.image.cache import ImageCache
from host_bridge.image.files import CHUNK_SIZE, atomic_copy, fsync_dir, verify_against_job
from host_bridge.image.http import HttpClientOpener, Opener, Response, tls_context
from host_bridge.jobs.documents import FirmwareJob
from host_bridge.redact import redact_text, redact_url
from host_bridge.urls import presigned_expiry, url_problem

__all__ = [
    "CHUNK_SIZE",
    "DownloadError",
    "DownloadResult",
    "Downloader",
    "HttpClientOpener",
    "Opener",
    "Response",
]

log = logging.getLogger(__name__)

MAX_REDIRECTS: Final = 5
USER_AGENT: Final = "fota-bridge"
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE: Final = re.compile(r"bytes\s+([0-9]+)-([0-9]+)/([0-9]+|\*)")
_S3_CODE: Final = re.compile(rb"<Code>([A-Za-z]{1,64})</Code>")


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    sha256: bytes
    md5: bytes
    from_cache: bool = False
    resumes: int = 0  # requests that continued a transfer with Range
    refreshes: int = 0  # presigned URLs replaced after they expired


DownloadProgress = Callable[[int, int | None], None]


class Downloader:
    """Downloads FirmwareJob images; one instance serves any number of jobs and devices.

    ``cache_dir``: keep verified images there (an :class:`ImageCache`) and reuse them.
    ``ca_file``: trust these CAs instead of the system's. ``max_size``: the slot size; nothing
    larger is accepted (``fetch`` can override it per device). ``retries``: consecutive failed
    attempts allowed (an attempt that received bytes resets the count), with exponential
    backoff from ``backoff_s``. ``opener``, ``sleep`` and ``now`` (wall clock, POSIX seconds)
    are for tests.
    """

    def __init__(
        self,
        *,
        cache_dir: str | Path | None = None,
        ca_file: str | Path | None = None,
        allow_http: bool = False,
        allowed_hosts: Sequence[str] | None = None,
        max_size: int | None = None,
        retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        timeout_s: float = 30.0,
        max_refreshes: int = 3,
        opener: Opener | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.cache = None if self.cache_dir is None else ImageCache(self.cache_dir)
        self.allow_http = allow_http
        self.allowed_hosts = allowed_hosts
        self.max_size = max_size
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_refreshes = max_refreshes
        self.sleep = sleep
        self.now = now
        self.opener: Opener = opener or HttpClientOpener(tls_context(ca_file), timeout_s)

    def fetch(
        self,
        job: FirmwareJob,
        target: str | Path,
        *,
        refresh_url: Callable[[], str] | None = None,
        progress: DownloadProgress | None = None,
        max_size: int | None = None,
    ) -> DownloadResult:
        """Download ``job.url`` to ``target`` (mode 0600), checked against the job's size/hashes.

        ``refresh_url`` returns a fresh URL for the job (the daemon asks AWS for the job document
        again) and is called when a presigned URL has expired. ``progress(received, total)``
        is called after every piece; ``total`` is None while unknown. ``max_size`` (the target
        slot's size) overrides the downloader's.
        """
        target = Path(target)
        max_size = self.max_size if max_size is None else max_size
        self._check_url("url", job.url)
        if job.size is not None and max_size is not None and job.size > max_size:
            raise DownloadError(
                f"the image is {job.size} bytes but the slot holds at most {max_size} bytes"
            )
        if self.cache is not None:
            hit = self._from_cache(job, target, progress, max_size)
            if hit is not None:
                return hit
        part = target.with_name(target.name + ".part")
        log.info("downloading %s", redact_url(job.url))
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as out:
                transfer = _Transfer(self, job, out, refresh_url, progress, max_size)
                transfer.run()
                out.flush()
                os.fsync(out.fileno())
            sha256, md5 = transfer.sha256.digest(), transfer.md5.digest()
            verify_against_job(job, transfer.received, sha256, md5)
            if self.cache is not None:
                self.cache.store(part, sha256)
            os.replace(part, target)
            fsync_dir(target.parent)
        except OSError as exc:
            raise DownloadError(
                f"cannot write {exc.filename or part}: {exc.strerror or exc}"
            ) from None
        finally:
            part.unlink(missing_ok=True)
        log.info(
            "downloaded %d bytes from %s (resumed %d, refreshed %d)",
            transfer.received,
            redact_url(job.url),
            transfer.resumes,
            transfer.refreshes,
        )
        return DownloadResult(
            target,
            transfer.received,
            sha256,
            md5,
            resumes=transfer.resumes,
            refreshes=transfer.refreshes,
        )

    def _check_url(self, name: str, url: str) -> None:
        problem = url_problem(url, allow_http=self.allow_http, allowed_hosts=self.allowed_hosts)
        if problem is not None:
            raise DownloadError(f"{name} {problem}")

    def _from_cache(
        self,
        job: FirmwareJob,
        target: Path,
        progress: DownloadProgress | None,
        max_size: int | None,
    ) -> DownloadResult | None:
        assert self.cache is not None
        hit = self.cache.lookup(job)
        if hit is None:
            return None
        if max_size is not None and hit.size > max_size:
            raise DownloadError(
                f"the image is {hit.size} bytes but the slot holds at most {max_size} bytes"
            )
        try:
            atomic_copy(hit.path, target)
        except OSError as exc:
            raise DownloadError(f"cannot write {target}: {exc.strerror or exc}") from None
        log.info("using cached image %s for %s", hit.path.name, redact_url(job.url))
        if progress is not None:
            progress(hit.size, hit.size)
        return DownloadResult(target, hit.size, hit.sha256, hit.md5, from_cache=True)


class _Retry(Exception):
    """This attempt failed in a way another attempt may not."""


class _Expired(Exception):
    """The presigned URL has expired."""


class _Transfer:
    """One download's state across attempts: bytes received so far, their hashes, the URL."""

    def __init__(
        self,
        dl: Downloader,
        job: FirmwareJob,
        out: BinaryIO,
        refresh_url: Callable[[], str] | None,
        progress: DownloadProgress | None,
        max_size: int | None,
    ) -> None:
        self.dl = dl
        self.max_size = max_size
        self.job = job
        self.url = job.url
        self.out = out
        self.refresh_url = refresh_url
        self.progress = progress
        self.received = 0
        self.total = job.size
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.resumes = 0
        self.refreshes = 0

    def run(self) -> None:
        failures = 0
        while True:
            expiry = presigned_expiry(self.url)
            if expiry is not None and expiry <= self.dl.now():
                self._refresh("its X-Amz-Expires time has passed")
                continue
            before = self.received
            try:
                self._attempt()
                return
            except _Expired:
                self._refresh("the server says the request has expired")
            except _Retry as exc:
                failures = 1 if self.received > before else failures + 1
                if failures > self.dl.retries:
                    raise DownloadError(
                        f"download of {redact_url(self.url)} failed after "
                        f"{failures} attempts: {exc}",
                        transient=True,
                    ) from None
                delay = min(self.dl.max_backoff_s, self.dl.backoff_s * 2 ** (failures - 1))
                log.warning(
                    "download of %s interrupted at %d bytes (%s); retrying in %.1f s",
                    redact_url(self.url),
                    self.received,
                    exc,
                    delay,
                )
                self.dl.sleep(delay)

    def _refresh(self, why: str) -> None:
        if self.refresh_url is None:
            raise DownloadError(
                f"the presigned URL {redact_url(self.url)} has expired ({why}) "
                "and there is no way to ask for a new one",
                transient=True,
            )
        if self.refreshes >= self.dl.max_refreshes:
            raise DownloadError(
                f"the presigned URL {redact_url(self.url)} expired again after "
                f"{self.refreshes} refreshes",
                transient=True,
            )
        self.refreshes += 1
        log.warning(
            "presigned URL %s expired (%s); asking for a new one", redact_url(self.url), why
        )
        url = self.refresh_url()
        self.dl._check_url("refreshed url", url)
        self.url = url

    def _attempt(self) -> None:
        headers = {"User-Agent": USER_AGENT}
        if self.received:
            headers["Range"] = f"bytes={self.received}-"
            self.resumes += 1
        try:
            resp, url = self._open(headers)
        except ssl.SSLCertVerificationError as exc:
            host = urlsplit(self.url).hostname
            raise DownloadError(
                f"TLS certificate verification failed for {host}: {exc.verify_message} "
                "(is the right CA file configured?)"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Retry(_describe(exc)) from None
        try:
            self._receive(resp, url)
        finally:
            with contextlib.suppress(OSError, http.client.HTTPException):
                resp.close()

    def _open(self, headers: Mapping[str, str]) -> tuple[Response, str]:
        """GET the URL, following redirects that pass the same URL checks."""
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            log.debug("GET %s %s", redact_url(url), headers.get("Range", ""))
            resp = self.dl.opener(url, headers)
            if resp.status not in _REDIRECTS:
                return resp, url
            location = resp.getheader("Location")
            with contextlib.suppress(OSError, http.client.HTTPException):
                resp.close()
            if not location:
                raise DownloadError(
                    f"HTTP {resp.status} redirect without a Location from {redact_url(url)}"
                )
            url = urljoin(url, location)
            self.dl._check_url("redirect target", url)
        raise DownloadError(f"more than {MAX_REDIRECTS} redirects from {redact_url(self.url)}")

    def _receive(self, resp: Response, url: str) -> None:
        status = resp.status
        if status in (400, 403):
            self._refused(resp, url)
        if status == 429 or 500 <= status <= 599:
            raise _Retry(f"HTTP {status} {resp.reason}")
        length = _int_header(resp, "Content-Length")
        if status == 206:
            start, announced = _content_range(resp.getheader("Content-Range"))
            if start != self.received:
                self._restart()
                raise _Retry(f"the server resumed at byte {start}, not {self.received}")
            if length is not None and announced is not None and length != announced - start:
                raise DownloadError(
                    f"{redact_url(url)} sent a Content-Length of {length} for bytes "
                    f"{start}..{announced - 1}"
                )
        elif status == 200:
            if self.received:
                log.info("%s ignored the Range request; starting again", redact_url(url))
                self._restart()
            start, announced = 0, length
        elif status == 416 and self.received:
            self._restart()
            raise _Retry("the server refused to resume (HTTP 416)")
        else:
            raise DownloadError(f"HTTP {status} {resp.reason} from {redact_url(url)}")
        self._check_announced(announced, url)
        self._stream(resp, None if length is None else start + length)

    def _refused(self, resp: Response, url: str) -> None:
        """A 400 or 403: an expired presigned URL, or a real refusal."""
        try:
            body = resp.read(4096)
        except (OSError, http.client.HTTPException):
            body = b""
        expiry = presigned_expiry(url)
        if b"expired" in body.lower() or (expiry is not None and expiry <= self.dl.now()):
            raise _Expired
        code = _S3_CODE.search(body)
        detail = f" ({code.group(1).decode()})" if code else ""
        raise DownloadError(f"HTTP {resp.status} {resp.reason}{detail} from {redact_url(url)}")

    def _check_announced(self, announced: int | None, url: str) -> None:
        if announced is None:
            return
        if self.job.size is not None and announced != self.job.size:
            raise DownloadError(
                f"{redact_url(url)} is {announced} bytes but the job document says {self.job.size}"
            )
        if self.max_size is not None and announced > self.max_size:
            raise DownloadError(
                f"{redact_url(url)} is {announced} bytes but the slot holds at most "
                f"{self.max_size} bytes"
            )
        self.total = announced

    def _stream(self, resp: Response, end: int | None) -> None:
        """Copy the body to the file; stop at the first byte beyond any known size."""
        bounds = [
            (bound, label)
            for bound, label in (
                (self.job.size, "the job document announced"),
                (self.total, "the server announced"),
                (self.max_size, "the slot holds"),
            )
            if bound is not None
        ]
        limit, label = min(bounds, key=lambda b: b[0]) if bounds else (None, "")
        while True:
            want = CHUNK_SIZE if limit is None else min(CHUNK_SIZE, limit - self.received + 1)
            try:
                piece = resp.read(want)
            except (OSError, http.client.HTTPException) as exc:
                raise _Retry(_describe(exc)) from None
            if not piece:
                break
            if limit is not None and self.received + len(piece) > limit:
                raise DownloadError(
                    f"{redact_url(self.url)} sent more than the {limit} bytes {label}"
                )
            self.out.write(piece)
            self.sha256.update(piece)
            self.md5.update(piece)
            self.received += len(piece)
            if self.progress is not None:
                self.progress(self.received, self.total)
        expected = end if end is not None else self.total
        if expected is not None and self.received < expected:
            raise _Retry(f"connection closed after {self.received} of {expected} bytes")

    def _restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.received = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        if self.progress is not None:
            self.progress(0, self.total)


def _int_header(resp: Response, name: str) -> int | None:
    value = resp.getheader(name)
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _content_range(value: str | None) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None)."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        raise _Retry(f"a 206 reply with an unusable Content-Range {value!r}")
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def _describe(exc: BaseException) -> str:
    text = redact_text(str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
