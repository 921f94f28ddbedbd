"""TLS files checked the way a connection will load them, naming the setting that is wrong.

Shared by the gateway (``[broker]`` in ``bridge.toml``) and the local jobs service.
"""

from __future__ import annotations

import re
import ssl

from fota_common.errors import ConfigError

__all__ = ["check_tls_files"]


def check_tls_files(
    ca: str | None,
    cert: str | None = None,
    key: str | None = None,
    names: tuple[str, str, str] = ("[broker] ca", "cert", "key"),
) -> None:
    """Load the TLS files the way a connection will, naming the one that is unusable
    (``names``: what the person calls the CA, certificate and key settings)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(
                f"cannot use {names[0]} {ca} as a CA certificate: {_why(exc)}"
            ) from exc
    if cert is not None:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot use {names[1]} {cert} with {names[2]} {key} as a client "
                f"certificate: {_why(exc)}"
            ) from exc


def _why(exc: BaseException) -> str:
    """``[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found (_ssl.c:4154)`` ->
    ``no certificate or crl found``; an OSError's strerror."""
    text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    return re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(text)) or str(exc)
