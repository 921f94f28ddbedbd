"""Which image URLs the gateway may fetch, and what a presigned URL says about itself.

Shared by the job-document codec (:mod:`host_bridge.jobs.documents`) and the downloader
(:mod:`host_bridge.image.download`, which checks redirects and refreshed URLs), so both refuse
the same URLs in the same words.  Pure functions: strings in, values out.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from host_bridge.redact import redact_url

__all__ = ["host_allowed", "is_presigned", "presigned_expiry", "url_problem"]

_SIGV4_KEYS: Final = frozenset({"x-amz-signature", "x-amz-credential", "x-amz-security-token"})


def url_problem(
    url: str, *, allow_http: bool = False, allowed_hosts: Sequence[str] | None = None
) -> str | None:
    """Why ``url`` may not be fetched (a phrase to put after its name), or None if it may.

    Shared by the document codec and the downloader (which checks redirects and refreshed
    URLs with it), so both refuse the same URLs in the same words.
    """
    if not url:
        return "is empty"
    if any(c.isspace() or not c.isprintable() or not c.isascii() for c in url):
        return "must be plain ASCII without spaces (percent-encode other characters)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError:
        return f"is not a valid URL: {redact_url(url)!r}"
    scheme = parts.scheme.lower()
    if scheme == "http" and not allow_http:
        return "must be https:// (plain http is allowed only with allow_http)"
    if scheme not in ("https", "http"):
        return f"must be an https:// URL, got {redact_url(url)!r}"
    if "@" in parts.netloc:
        return "must not carry user:password@ credentials"
    if not host:
        return f"has no host: {redact_url(url)!r}"
    if allowed_hosts is not None and not host_allowed(host, allowed_hosts):
        return f"host {host!r} is not in allowed_hosts ({', '.join(_patterns(allowed_hosts))})"
    return None


def host_allowed(host: str, allowed_hosts: Sequence[str]) -> bool:
    """``host`` matches an exact name or a ``*.suffix`` pattern (not the bare suffix itself)."""
    host = host.lower().rstrip(".")
    for pattern in _patterns(allowed_hosts):
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def _patterns(allowed_hosts: Sequence[str]) -> list[str]:
    if isinstance(allowed_hosts, str):  # one name given where a list was meant
        allowed_hosts = [allowed_hosts]
    return [p.strip().lower().rstrip(".") for p in allowed_hosts if p.strip()]


def _query(url: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    except ValueError:
        return {}
    return {key.lower(): value for key, value in pairs}


def is_presigned(url: str) -> bool:
    """Does ``url`` carry an AWS signature (SigV4 ``X-Amz-*`` or SigV2) in its query string?"""
    query = _query(url)
    return bool(_SIGV4_KEYS & query.keys()) or {"signature", "awsaccesskeyid"} <= query.keys()


def presigned_expiry(url: str) -> float | None:
    """When a presigned URL stops working (POSIX seconds), if its query string says so."""
    query = _query(url)
    try:
        if "x-amz-date" in query and "x-amz-expires" in query:
            signed_at = calendar.timegm(time.strptime(query["x-amz-date"], "%Y%m%dT%H%M%SZ"))
            return float(signed_at + int(query["x-amz-expires"]))
        if "expires" in query and "signature" in query:  # SigV2: an absolute time
            return float(int(query["expires"]))
    except (ValueError, OverflowError):
        return None
    return None
