"""Where the gateway's MQTT connection goes: the broker's address and TLS files (pure data).

Read from ``bridge.toml`` by :mod:`host_bridge.config`, used by :mod:`host_bridge.jobs.client`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BrokerConfig", "TlsConfig"]


@dataclass(frozen=True)
class TlsConfig:
    """The client side of the broker's TLS: the CA to trust, and a certificate for mutual TLS."""

    ca: str
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class BrokerConfig:
    host: str
    port: int = 8883
    client_id: str = "fota-bridge"
    tls: TlsConfig | None = None
    keepalive_s: int = 60
