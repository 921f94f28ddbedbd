"""Security properties of the bridge: the broker connection.

(a) the broker takes only clients with a certificate from its CA (mosquitto, mutual TLS);
(b) plaintext MQTT only when the config says so.
"""

from __future__ import annotations

import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from security_kit import THING

from harness.mosquitto import HOST, Mosquitto, TestPki
from host_bridge.config import ConfigError, parse_config

pytestmark = pytest.mark.timeout(120)


# -- (a) mutual TLS on a real broker --------------------------------------------------------------


def mqtt_connect(port: int, ca: str, cert: str | None = None, key: str | None = None) -> str:
    """ "connected", or how the attempt ended."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sec-{uuid.uuid4().hex[:8]}")
    client.tls_set(
        ca_certs=ca,
        certfile=cert,
        keyfile=key,
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    outcome: list[str] = []
    done = threading.Event()

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        outcome.append(f"refused: {reason}" if reason.is_failure else "connected")
        done.set()

    def on_disconnect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        outcome.append(f"disconnected: {reason}")
        done.set()

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    try:
        client.connect(HOST, port, keepalive=5)
    except (OSError, ssl.SSLError) as exc:
        return f"handshake failed: {exc}"
    client.loop_start()
    try:
        if not done.wait(10.0):
            return "no answer within 10 s"
        return outcome[0]
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("broker"), tls=True) as broker:
        yield broker


def test_broker_accepts_a_client_certificate_from_its_ca(tls_broker: Mosquitto) -> None:
    assert tls_broker.pki is not None and tls_broker.tls_port is not None
    good = tls_broker.pki.client("gateway")
    assert mqtt_connect(tls_broker.tls_port, tls_broker.pki.ca, good.cert, good.key) == "connected"


def test_broker_refuses_a_client_without_a_certificate(tls_broker: Mosquitto) -> None:
    assert tls_broker.pki is not None and tls_broker.tls_port is not None
    outcome = mqtt_connect(tls_broker.tls_port, tls_broker.pki.ca)
    assert outcome.startswith(("disconnected", "handshake failed")), outcome
    tls_broker.wait_for_log("peer did not return a certificate")


def test_broker_refuses_a_certificate_from_another_ca(
    tls_broker: Mosquitto, tmp_path: Path
) -> None:
    assert tls_broker.pki is not None and tls_broker.tls_port is not None
    intruder = TestPki(tmp_path / "other-ca").client("intruder")
    outcome = mqtt_connect(tls_broker.tls_port, tls_broker.pki.ca, intruder.cert, intruder.key)
    assert outcome.startswith(("disconnected", "handshake failed")), outcome
    tls_broker.wait_for_log("certificate verify failed")


# -- (b) plaintext MQTT only when asked for -------------------------------------------------------


def config_tree(**broker: Any) -> dict[str, Any]:
    return {
        "broker": {"host": "broker.example", **broker},
        "device": [{"thing": THING, "port": "/dev/ttyUSB0"}],
    }


def test_a_broker_without_tls_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'ca' is required for TLS \(set insecure_plaintext"):
        parse_config(config_tree(), tmp_path)
    with pytest.raises(ConfigError, match="'insecure_plaintext' must be bool"):
        parse_config(config_tree(insecure_plaintext="yes"), tmp_path)


def test_plaintext_only_with_insecure_plaintext(tmp_path: Path) -> None:
    cfg = parse_config(config_tree(insecure_plaintext=True), tmp_path)
    assert cfg.broker.tls is None and cfg.broker.port == 1883
    (tmp_path / "ca.pem").write_text("x")
    cfg = parse_config(config_tree(ca="ca.pem"), tmp_path)
    assert cfg.broker.tls is not None and cfg.broker.port == 8883
