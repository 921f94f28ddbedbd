"""Make URLs safe to log: a presigned URL's query string is a credential.

An S3 presigned URL carries its signature (often with a temporary security token) in its query
string, and a URL may carry ``user:password@``. Anything the bridge logs, reports in
``statusDetails`` or puts in an error message goes through :func:`redact_url` (one URL) or
:func:`redact_text` (free text that may contain URLs).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

# A URL in free text; punctuation right after it ("... from https://h/x: ...") is not part of it.
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,:;!?)\]]")
# A query string left in free text without its scheme, e.g. a request target "/key?X-Amz-...".
_BARE_QUERY: Final = re.compile(r"\?[^\s'\"<>]*=[^\s'\"<>]*")


def redact_url(url: str) -> str:
    """``url`` without its query string, fragment and userinfo; never raises."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:  # an unparseable URL (e.g. a broken IPv6 literal): cut by hand
        head = re.split(r"[?#]", url, maxsplit=1)[0]
        scheme, sep, rest = head.partition("://")
        if sep:
            authority, slash, path = rest.partition("/")
            return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
        return head


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted, and any other ``?key=value`` query cut off."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return _BARE_QUERY.sub("", text)
