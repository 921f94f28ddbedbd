"""The downloader's HTTP transport: one GET, one response, nothing else.

The standard library's http.client, on purpose: it adds no dependency to the gateway, and it
gives the control the downloader needs and urllib's opener hides: ``Range`` requests with 206 and
200 replies told apart, reading a body piece by piece and stopping in the middle of it, choosing
which redirects to follow (each is checked like the job's own URL), and errors that never carry
a URL's query string (urllib's HTTPError keeps the whole presigned URL).
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from fota_common.errors import ConfigError

__all__ = ["HttpClientOpener", "Opener", "Response", "tls_context"]


class Response(Protocol):
    """The part of ``http.client.HTTPResponse`` the downloader uses."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str: ...
    def getheader(self, name: str) -> str | None: ...
    def read(self, amt: int) -> bytes: ...
    def close(self) -> None: ...


class Opener(Protocol):
    """Send ``GET url`` with ``headers``; return the response without following redirects."""

    def __call__(self, url: str, headers: Mapping[str, str]) -> Response: ...


class HttpClientOpener:
    """One http.client connection per request; TLS verified with ``context``."""

    def __init__(self, context: ssl.SSLContext, timeout_s: float) -> None:
        self._context = context
        self._timeout_s = timeout_s

    def __call__(self, url: str, headers: Mapping[str, str]) -> Response:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname or ""
        conn: http.client.HTTPConnection
        if parts.scheme.lower() == "https":
            conn = http.client.HTTPSConnection(
                host, parts.port, timeout=self._timeout_s, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=self._timeout_s)
        try:
            conn.request("GET", target, headers=dict(headers))
            return _ConnectionResponse(conn, conn.getresponse())
        except BaseException:
            conn.close()
            raise


class _ConnectionResponse:
    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp
        self.status = resp.status
        self.reason = resp.reason

    def getheader(self, name: str) -> str | None:
        return self._resp.getheader(name)

    def read(self, amt: int) -> bytes:
        try:
            return self._resp.read(amt)
        except http.client.IncompleteRead as exc:
            if exc.partial:
                return bytes(exc.partial)  # keep what arrived; the next read reports the drop
            raise

    def close(self) -> None:
        self._resp.close()
        self._conn.close()


def tls_context(cafile: str | Path | None) -> ssl.SSLContext:
    """System CAs, or only those in ``cafile``; certificates and host names are checked."""
    try:
        return ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise ConfigError(f"cannot use CA file {cafile}: {exc.strerror or exc}") from None
