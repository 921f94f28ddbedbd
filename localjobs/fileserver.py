"""A local HTTPS server for job images, with presigned URLs in S3's style.

    https://127.0.0.1:PORT/files/NAME?X-Amz-Date=20250101T120000Z&X-Amz-Expires=3600
        &X-Amz-Signature=<hex HMAC-SHA256 of "/files/NAME\\nDATE\\nEXPIRES">

A missing or wrong signature is ``403 SignatureDoesNotMatch``; a URL past its date plus
expiry is ``403 Request has expired`` (what S3 says), so a device learns to ask for the job
document again and get a fresh URL.  GET and HEAD; one byte range per request (206, or 416
when it cannot be satisfied).

The certificates (a CA and a server certificate for 127.0.0.1 and localhost) and the URL
signing secret live in the state directory, keys with mode 0600, and are reused across
restarts so that devices keep trusting the same CA and URLs already handed out stay valid.
The query string is a credential: it is never logged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from fota_common.errors import ConfigError
from localjobs import LocalJobsError, pki

log = logging.getLogger(__name__)

HOSTS: Final = ("127.0.0.1", "localhost")
NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
DEFAULT_EXPIRES_S: Final = 3600
MAX_EXPIRES_S: Final = 7 * 24 * 3600
EXPIRED: Final = "Request has expired"
BAD_SIGNATURE: Final = "SignatureDoesNotMatch"
HANDSHAKE_TIMEOUT_S: Final = 10.0
IO_TIMEOUT_S: Final = 60.0
CHUNK: Final = 64 * 1024

Unsatisfiable = Literal["unsatisfiable"]
_RANGE_RE: Final = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str | None, size: int) -> tuple[int, int] | Unsatisfiable | None:
    """The (first, last) bytes a ``Range`` header asks for; None to send the whole file
    (no header, or one this server does not take: several ranges, bad syntax)."""
    if header is None:
        return None
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None or match[1] == match[2] == "":
        return None
    if match[1] == "":  # the last N bytes
        n = int(match[2])
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    first = int(match[1])
    if match[2] and int(match[2]) < first:
        return None
    if first >= size:
        return "unsatisfiable"
    return first, min(int(match[2]), size - 1) if match[2] else size - 1


def ensure_tls(state_dir: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) under ``state_dir/tls``, made once."""
    tls = state_dir / "tls"
    tls.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_pem, ca_key = tls / "ca.pem", tls / "ca.key"
    cert, key = tls / "server.pem", tls / "server.key"
    ca = pki.load(ca_pem, ca_key)
    if ca is None:
        ca = pki.make_ca("fota-bridge local jobs CA")
        ca.write(ca_pem, ca_key)
        cert.unlink(missing_ok=True)
    server = pki.load(cert, key)
    if server is None or server.cert.issuer != ca.cert.subject:
        pki.make_leaf(ca, "fota-bridge local files", hosts=HOSTS).write(cert, key)
    return ca_pem, cert, key


def _secret(state_dir: Path) -> bytes:
    path = state_dir / "url-secret"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        value = secrets.token_bytes(32)
        pki.write_file(path, value.hex().encode(), 0o600)
        return value


class FileServer:
    """Serves the files in ``directory`` over HTTPS on ``host:port`` (0: any free port)."""

    def __init__(
        self,
        directory: Path,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        url_expires_s: int = DEFAULT_EXPIRES_S,
    ) -> None:
        self.directory = Path(directory)
        self.host = host
        self.clock = clock
        self.url_expires_s = url_expires_s
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self.ca_path, cert, key = ensure_tls(Path(state_dir))
            self._secret = _secret(Path(state_dir))
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(cert, key)
            self._httpd = _TlsServer((host, port), ctx, self)
        except (OSError, ssl.SSLError) as exc:
            raise LocalJobsError(f"cannot start the file server on {host}:{port}: {exc}") from exc
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> FileServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.1,), name="localjobs-files", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(HANDSHAKE_TIMEOUT_S)
        self._httpd.server_close()

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- URLs --------------------------------------------------------------------------------
    def _signature(self, name: str, date: str, expires: str) -> str:
        message = f"/files/{name}\n{date}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def url_for(self, name: str, expires_s: int | None = None) -> str:
        """A URL for ``name`` that works for ``expires_s`` seconds from now."""
        expires = self.url_expires_s if expires_s is None else expires_s
        if not NAME_RE.fullmatch(name):
            raise ConfigError(f"cannot serve {name!r}: names are [A-Za-z0-9._-], up to 255")
        if not 1 <= expires <= MAX_EXPIRES_S:
            raise ConfigError(f"URL expiry must be 1-{MAX_EXPIRES_S} s, not {expires}")
        date = dt.datetime.fromtimestamp(self.clock(), dt.UTC).strftime(DATE_FORMAT)
        signature = self._signature(name, date, str(expires))
        return (
            f"https://{self.host}:{self.port}/files/{quote(name)}?X-Amz-Date={date}"
            f"&X-Amz-Expires={expires}&X-Amz-Signature={signature}"
        )

    def presign(self, url: str) -> str:
        """A fresh signed URL for a ``https://127.0.0.1:ANY/files/NAME`` placeholder URL;
        other URLs come back unchanged."""
        parts = urlsplit(url)
        name = unquote(parts.path.removeprefix("/files/"))
        local = parts.hostname in (*HOSTS, self.host) and parts.path.startswith("/files/")
        if not local or not NAME_RE.fullmatch(name):
            return url
        return self.url_for(name)

    def refusal(self, name: str, query: str) -> str | None:
        """Why the signed query does not open ``name`` (403's body), or None."""
        q = {k: v[0] for k, v in parse_qs(query).items()}
        date, expires = q.get("X-Amz-Date", ""), q.get("X-Amz-Expires", "")
        given = q.get("X-Amz-Signature", "")
        if not hmac.compare_digest(given.encode(), self._signature(name, date, expires).encode()):
            return BAD_SIGNATURE
        signed = dt.datetime.strptime(date, DATE_FORMAT).replace(tzinfo=dt.UTC).timestamp()
        if self.clock() > signed + int(expires):
            return EXPIRED
        return None


class _TlsServer(ThreadingHTTPServer):
    """The TLS handshake runs in the request's thread, so a silent client stalls no one."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], ctx: ssl.SSLContext, owner: FileServer) -> None:
        self.ctx = ctx
        self.owner = owner
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            conn = self.ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            conn.settimeout(IO_TIMEOUT_S)
            _Handler(conn, client_address, self)
        except (OSError, ssl.SSLError) as exc:
            log.debug("connection from %s: %s", client_address, exc)
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fota-localjobs"
    server: _TlsServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), self.path.split("?", 1)[0])

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _text(self, code: int, text: str, body: bool) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _serve(self, body: bool) -> None:
        owner = self.server.owner
        path, _, query = self.path.partition("?")
        name = unquote(path.removeprefix("/files/"))
        if not path.startswith("/files/") or not NAME_RE.fullmatch(name):
            self._text(404, "NoSuchKey", body)
            return
        if refusal := owner.refusal(name, query):
            self._text(403, refusal, body)
            return
        file = owner.directory / name
        try:
            f = file.open("rb")
        except OSError:
            self._text(404, "NoSuchKey", body)
            return
        with f:
            size = file.stat().st_size
            wanted = byte_range(self.headers.get("Range"), size)
            if wanted == "unsatisfiable":
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last = (0, size - 1) if wanted is None else wanted
            self.send_response(200 if wanted is None else 206)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(last - first + 1))
            if wanted is not None:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if not body:
                return
            f.seek(first)
            left = last - first + 1
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
