"""A local HTTPS server for download tests, with a throwaway CA and per-path misbehaviour.

    pki = make_pki(tmp_dir)                    # CA + a certificate for 127.0.0.1 and localhost
    with HttpsServer(pki) as server:           # HttpsServer(None) serves plain http
        server.routes["/fw.bin"] = Route(body=data, drop_after=1000)
        url = server.url("/fw.bin", "X-Amz-Signature=abc")
        ...
        server.requests                        # what the server saw, in order

A route serves its bytes and honours ``Range: bytes=N-`` (206) unless told not to; it can drop
the connection after N body bytes (for the first ``drops`` responses), answer 403 "Request has
expired" for given ``X-Amz-Signature`` tokens (or for any token after its first use), announce a
wrong Content-Length or none, send junk after the body, fail with a status, or redirect.
Every socket has a 5 s timeout and the handler threads are daemons, so ``stop()`` is bounded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SOCKET_TIMEOUT_S = 5.0
PIECE = 64 * 1024
EXPIRED_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message><Expires>2020-01-01T00:01:00Z</Expires></Error>"
)
DENIED_BODY = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"


# --- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_cert: Path  # PEM: give this to the client as its CA file
    server_cert: Path
    server_key: Path


def make_pki(directory: Path) -> Pki:
    """A CA and a server certificate for 127.0.0.1 and localhost, valid for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fota-bridge test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# --- behaviours ---------------------------------------------------------------------------------


@dataclass
class Route:
    body: bytes = b""
    honour_range: bool = True
    drop_after: int | None = None  # close the connection after this many body bytes ...
    drops: int = 1  # ... in this many responses
    content_length: int | None = None  # announce this instead of the true length (200 only)
    omit_length: bool = False  # no Content-Length: the body ends when the connection closes
    trailing_junk: int = 0  # bytes sent after the body (with omit_length: "more than announced")
    expired_tokens: set[str] = field(default_factory=set)  # X-Amz-Signature values refused
    single_use_tokens: bool = False  # a token expires after its first request
    status: int | None = None  # answer with this status (403: "Access Denied") ...
    status_times: int | None = None  # ... this many times (None: always)
    redirect_to: str | None = None  # 302 to this URL


@dataclass
class Seen:
    path: str
    query: str
    range: str | None
    status: int = 0
    sent: int = 0  # body bytes written before the client went away or the body ended

    @property
    def token(self) -> str | None:
        return parse_qs(self.query).get("X-Amz-Signature", [None])[0]


class HttpsServer:
    """A threaded HTTP(S) server on 127.0.0.1, on a free port."""

    def __init__(self, pki: Pki | None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        context = None
        if pki is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(pki.server_cert, pki.server_key)
        self.scheme = "https" if pki is not None else "http"
        self._httpd = _Server(("127.0.0.1", 0), _Handler, context, self)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str, query: str = "", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}" + (f"?{query}" if query else "")

    def start(self) -> HttpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=SOCKET_TIMEOUT_S)

    def __enter__(self) -> HttpsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def seen(self, path: str) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        context: ssl.SSLContext | None,
        owner: HttpsServer,
    ) -> None:
        self.context = context
        self.owner = owner
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the request's thread, so a client that never
        # finishes it (or rejects the certificate) cannot stall the accept loop.
        request.settimeout(SOCKET_TIMEOUT_S)
        if self.context is None:
            super().finish_request(request, client_address)
            return
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:
            return
        try:
            _Handler(tls, client_address, self)
        except OSError:
            pass
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-body is what several tests do on purpose


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        seen = Seen(parts.path, parts.query, self.headers.get("Range"))
        with owner.lock:
            owner.requests.append(seen)
            route = owner.routes.get(parts.path)
            if route is None:
                return self._reply(seen, 404, b"not found")
            if seen.token is not None and seen.token in route.expired_tokens:
                return self._reply(seen, 403, EXPIRED_BODY)
            if seen.token is not None and route.single_use_tokens:
                route.expired_tokens.add(seen.token)
            if route.status is not None and (route.status_times is None or route.status_times):
                if route.status_times is not None:
                    route.status_times -= 1
                return self._reply(seen, route.status, DENIED_BODY)
            if route.redirect_to is not None:
                return self._reply(seen, 302, b"", {"Location": route.redirect_to})
            drop_after = None
            if route.drop_after is not None and route.drops > 0:
                route.drops -= 1
                drop_after = route.drop_after
        body = route.body
        match = re.fullmatch(r"bytes=(\d+)-", seen.range or "")
        headers: dict[str, str] = {"Content-Type": "application/octet-stream"}
        if match and route.honour_range:
            start = int(match.group(1))
            if start >= len(body):
                headers["Content-Range"] = f"bytes */{len(body)}"
                return self._reply(seen, 416, b"", headers)
            status, payload = 206, body[start:]
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            headers["Content-Length"] = str(len(payload))
        else:
            status, payload = 200, body
            headers["Content-Length"] = str(
                len(payload) if route.content_length is None else route.content_length
            )
        if route.omit_length:
            del headers["Content-Length"]
        seen.status = status
        self._head(status, headers)
        cut = len(payload) if drop_after is None else min(drop_after, len(payload))
        if not self._send(seen, memoryview(payload)[:cut]):
            return None
        if drop_after is not None:
            self._drop()
            return None
        junk = b"\x55" * PIECE
        left = route.trailing_junk
        while left > 0:
            if not self._send(seen, memoryview(junk)[: min(left, PIECE)]):
                return None
            left -= PIECE
        return None

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _reply(
        self, seen: Seen, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        seen.status = status
        self._head(status, {**(headers or {}), "Content-Length": str(len(body))})
        self._send(seen, memoryview(body))

    def _send(self, seen: Seen, data: memoryview) -> bool:
        try:
            for offset in range(0, len(data), PIECE):
                piece = data[offset : offset + PIECE]
                self.wfile.write(piece)
                seen.sent += len(piece)
            self.wfile.flush()
        except OSError:
            return False
        return True

    def _drop(self) -> None:
        """Cut the TCP connection without a TLS close_notify: a dropped line, not an end."""
        self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def serve(pki: Pki | None) -> Iterator[HttpsServer]:
    """For fixtures: ``yield from serve(pki)``."""
    with HttpsServer(pki) as server:
        yield server
