"""The local HTTPS file server: presigned URLs (expiry on an injected clock, tampering),
ranges, HEAD, and certificates and secrets that survive a restart.  Real peer: http.client
over TLS, trusting only the server's own CA."""

from __future__ import annotations

import http.client
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fota_common.errors import ConfigError
from localjobs.fileserver import BAD_SIGNATURE, EXPIRED, FileServer, byte_range

T0 = 1_700_000_000.0
DATA = bytes(range(256)) * 40 + b"tail"  # 10244 bytes


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(tmp_path: Path, clock: FakeClock) -> Iterator[FileServer]:
    files = tmp_path / "state" / "files"
    files.mkdir(parents=True)
    (files / "app-1.2.3.bin").write_bytes(DATA)
    (files / "empty.bin").write_bytes(b"")
    with FileServer(files, tmp_path / "state", clock=clock) as srv:
        yield srv


def fetch(
    srv: FileServer,
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    ctx = ssl.create_default_context(cafile=str(srv.ca_path))
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(host, srv.port, context=ctx, timeout=5)
    try:
        conn.request(method, f"{parts.path}?{parts.query}", headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_get_and_head(server: FileServer) -> None:
    url = server.url_for("app-1.2.3.bin", 60)
    assert url.startswith(f"https://127.0.0.1:{server.port}/files/app-1.2.3.bin?X-Amz-Date=")
    assert "X-Amz-Expires=60&X-Amz-Signature=" in url
    status, headers, body = fetch(server, url)
    assert (status, body) == (200, DATA)
    assert headers["content-length"] == str(len(DATA)) and headers["accept-ranges"] == "bytes"
    status, headers, body = fetch(server, url, "HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", str(len(DATA)))
    status, _, body = fetch(server, server.url_for("empty.bin"))
    assert (status, body) == (200, b"")


def test_the_certificate_names_localhost_too(server: FileServer) -> None:
    status, _, body = fetch(server, server.url_for("app-1.2.3.bin"), host="localhost")
    assert (status, body) == (200, DATA)


@pytest.mark.parametrize(
    ("header", "status", "first", "last"),
    [
        ("bytes=0-0", 206, 0, 0),
        ("bytes=100-199", 206, 100, 199),
        ("bytes=10000-", 206, 10000, len(DATA) - 1),
        ("bytes=10000-99999", 206, 10000, len(DATA) - 1),
        ("bytes=-4", 206, len(DATA) - 4, len(DATA) - 1),
        ("bytes=-99999", 206, 0, len(DATA) - 1),
        ("bytes=0-1,5-6", 200, 0, len(DATA) - 1),  # several ranges: the whole file
        ("bytes=9-3", 200, 0, len(DATA) - 1),  # invalid: ignored
        ("items=0-1", 200, 0, len(DATA) - 1),
    ],
)
def test_ranges(server: FileServer, header: str, status: int, first: int, last: int) -> None:
    got, headers, body = fetch(server, server.url_for("app-1.2.3.bin"), headers={"Range": header})
    assert got == status
    assert body == DATA[first : last + 1]
    if status == 206:
        assert headers["content-range"] == f"bytes {first}-{last}/{len(DATA)}"


@pytest.mark.parametrize("header", [f"bytes={len(DATA)}-", "bytes=99999-100000", "bytes=-0"])
def test_unsatisfiable_ranges(server: FileServer, header: str) -> None:
    status, headers, body = fetch(
        server, server.url_for("app-1.2.3.bin"), headers={"Range": header}
    )
    assert (status, body) == (416, b"")
    assert headers["content-range"] == f"bytes */{len(DATA)}"


def test_expiry_on_the_injected_clock(server: FileServer, clock: FakeClock) -> None:
    url = server.url_for("app-1.2.3.bin", 60)
    clock.now += 60
    assert fetch(server, url)[0] == 200
    clock.now += 1
    status, headers, body = fetch(server, url)
    assert (status, body) == (403, EXPIRED.encode())
    status, head, body = fetch(server, url, "HEAD")
    assert (status, head["content-length"], body) == (403, headers["content-length"], b"")
    # asking again gives a fresh URL that works
    assert fetch(server, server.url_for("app-1.2.3.bin", 60))[0] == 200


@pytest.mark.parametrize(
    "tamper",
    [
        lambda u: u.replace("X-Amz-Expires=60", "X-Amz-Expires=6000"),
        lambda u: u.replace("X-Amz-Date=2023", "X-Amz-Date=2024"),
        lambda u: u[:-1] + ("0" if u[-1] != "0" else "1"),
        lambda u: u.replace("app-1.2.3.bin", "empty.bin"),
        lambda u: u.split("&X-Amz-Signature")[0],
        lambda u: u.split("?")[0],
        lambda u: u + "%C3%A9",
    ],
)
def test_tampered_urls_are_refused(server: FileServer, tamper: object) -> None:
    url = server.url_for("app-1.2.3.bin", 60)
    assert callable(tamper)
    status, _, body = fetch(server, tamper(url))
    assert (status, body) == (403, BAD_SIGNATURE.encode())


def test_unknown_files_and_other_paths(server: FileServer) -> None:
    assert fetch(server, server.url_for("missing.bin"))[:1] == (404,)
    good = urlsplit(server.url_for("app-1.2.3.bin"))
    for path in ("/files/..%2Fjobs.sqlite3", "/files/", "/other/app-1.2.3.bin", "/"):
        assert fetch(server, f"https://x{path}?{good.query}")[0] == 404
    with pytest.raises(ConfigError):
        server.url_for("../etc/passwd")
    with pytest.raises(ConfigError):
        server.url_for("app-1.2.3.bin", 0)


def test_presign_rewrites_local_placeholders_only(server: FileServer) -> None:
    fresh = server.presign("https://127.0.0.1:8443/files/app-1.2.3.bin")
    assert fresh.startswith(f"https://127.0.0.1:{server.port}/files/app-1.2.3.bin?X-Amz-Date=")
    assert fetch(server, fresh)[0] == 200
    assert server.presign("https://localhost/files/empty.bin").startswith("https://127.0.0.1:")
    for other in (
        "https://s3.amazonaws.com/bucket/files/a.bin",
        "https://127.0.0.1/x/a.bin",
        "https://127.0.0.1/files/../a",
    ):
        assert server.presign(other) == other


def test_certificates_and_secret_survive_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    state, files = tmp_path / "state", tmp_path / "state" / "files"
    files.mkdir(parents=True)
    (files / "a.bin").write_bytes(b"abc")
    with FileServer(files, state, clock=clock) as first:
        url = first.url_for("a.bin")
        ca = first.ca_path.read_bytes()
    for key in ("tls/ca.key", "tls/server.key", "url-secret"):
        assert stat.S_IMODE((state / key).stat().st_mode) == 0o600, key
    with FileServer(files, state, clock=clock) as second:
        assert second.ca_path.read_bytes() == ca  # devices keep trusting it
        status, _, body = fetch(second, url)  # a URL handed out before the restart
        assert (status, body) == (200, b"abc")


# -- the Range parser ------------------------------------------------------------------------
def test_byte_range_cases() -> None:
    assert byte_range(None, 10) is None
    assert byte_range("bytes=2-4", 10) == (2, 4)
    assert byte_range("bytes=-", 10) is None
    assert byte_range("bytes=-5", 0) == "unsatisfiable"
    assert byte_range("bytes=0-", 0) == "unsatisfiable"


@given(st.text(max_size=30), st.integers(min_value=0, max_value=10_000))
def test_byte_range_never_raises(header: str, size: int) -> None:
    got = byte_range(header, size)
    if isinstance(got, tuple):
        first, last = got
        assert 0 <= first <= last < size


@given(st.integers(0, 20_000), st.integers(0, 20_000), st.integers(1, 10_000))
def test_byte_range_within_the_file(a: int, b: int, size: int) -> None:
    got = byte_range(f"bytes={a}-{b}", size)
    if a > b:
        assert got is None
    elif a >= size:
        assert got == "unsatisfiable"
    else:
        assert got == (a, min(b, size - 1))
