"""``bridge.toml``: the daemon's configuration, validated with errors that name the key.

See ``examples/bridge.toml`` for every option with its meaning.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootloader.formats.layout import LayoutError, load_board
from fota_common.errors import ConfigError
from host_bridge.flow_events import POLICIES
from host_bridge.jobs.broker import BrokerConfig, TlsConfig
from host_bridge.smp.link import FRAMINGS

# AWS IoT's thing-name syntax; it also keeps MQTT wildcards (+, #) and "/" out of topics.
THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
MAX_STEP_TIMEOUT_MIN = 10080  # AWS IoT Jobs: stepTimeoutInMinutes is 1..10080


@dataclass(frozen=True)
class DeviceConfig:
    thing: str
    port: str
    board: str | None = None
    baud: int = 115200
    framing: str = "console"


@dataclass(frozen=True)
class BridgeConfig:
    broker: BrokerConfig
    devices: list[DeviceConfig]
    state_dir: Path
    signing_key: Path | None = None
    trusted_keys: list[Path] = field(default_factory=list)
    policy: str = "device"
    confirm_timeout_s: float = 60.0
    boot_timeout_s: float = 30.0
    step_timeout_min: int | None = None
    download_ca: Path | None = None
    allow_http: bool = False
    allowed_hosts: list[str] | None = None
    progress_interval_s: float = 5.0
    other_jobs: str = "reject"  # reject | ignore


def _get(table: dict[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    if key not in table:
        if default is None and kind is not type(None):
            return None
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: '{key}' must be {kind.__name__}, got {value!r}")
    return value


def _seconds(
    table: dict[str, Any], key: str, where: str, default: float, *, zero_ok: bool = False
) -> float:
    """A finite, positive number of seconds (TOML also has nan and inf)."""
    value = float(_get(table, key, float, where, default))
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        least = "0 or more" if zero_ok else "above 0"
        raise ConfigError(f"{where}: '{key}' must be a number of seconds {least}, got {value}")
    return value


def _ranged(table: dict[str, Any], key: str, where: str, low: int, high: int) -> int | None:
    value = _get(table, key, int, where)
    if value is not None and not low <= value <= high:
        raise ConfigError(f"{where}: '{key}' must be {low}..{high}, got {value}")
    return value  # type: ignore[no-any-return]


def _strings(table: dict[str, Any], key: str, where: str) -> list[str] | None:
    values = _get(table, key, list, where)
    if values is not None and not all(isinstance(v, str) and v for v in values):
        raise ConfigError(f"{where}: '{key}' must be a list of non-empty strings")
    return values  # type: ignore[no-any-return]


def _path(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(value)
    return p if p.is_absolute() else base / p


def _need_file(p: Path, where: str) -> None:
    if not p.exists():
        raise ConfigError(f"{where}: file {p} does not exist")
    if p.is_dir():
        raise ConfigError(f"{where}: {p} is a directory: give the file itself")
    if not p.is_file():
        raise ConfigError(f"{where}: {p} is not a regular file")


def parse_config(data: dict[str, Any], base: Path) -> BridgeConfig:
    broker_t = data.get("broker")
    if not isinstance(broker_t, dict):
        raise ConfigError("missing [broker] table (host, port, client_id, TLS files)")
    host = _get(broker_t, "host", str, "[broker]")
    if not host:
        raise ConfigError("[broker]: 'host' is required")
    plaintext = bool(_get(broker_t, "insecure_plaintext", bool, "[broker]", False))
    ca = _path(base, _get(broker_t, "ca", str, "[broker]"))
    cert = _path(base, _get(broker_t, "cert", str, "[broker]"))
    key = _path(base, _get(broker_t, "key", str, "[broker]"))
    if plaintext:
        tls = None
    else:
        if ca is None:
            raise ConfigError(
                "[broker]: 'ca' is required for TLS (set insecure_plaintext = true only for "
                "a local test broker)"
            )
        if (cert is None) != (key is None):
            raise ConfigError("[broker]: give both 'cert' and 'key' for mutual TLS, or neither")
        for p in (ca, cert, key):
            if p is not None:
                _need_file(p, "[broker]")
        tls = TlsConfig(str(ca), str(cert) if cert else None, str(key) if key else None)
    port = _get(broker_t, "port", int, "[broker]", 1883 if plaintext else 8883)
    if not 1 <= port <= 65535:
        raise ConfigError(f"[broker]: 'port' must be 1..65535, got {port}")
    broker = BrokerConfig(
        host=host,
        port=port,
        client_id=_get(broker_t, "client_id", str, "[broker]", "fota-bridge"),
        tls=tls,
    )
    devices_t = data.get("device")
    if not isinstance(devices_t, list) or not devices_t:
        raise ConfigError("no [[device]] tables: list each thing with its serial port")
    devices = []
    seen: set[str] = set()
    for i, d in enumerate(devices_t):
        where = f"[[device]] #{i + 1}"
        if not isinstance(d, dict):
            raise ConfigError(f"{where} must be a table")
        thing = _get(d, "thing", str, where)
        port_s = _get(d, "port", str, where)
        if not thing or not port_s:
            raise ConfigError(f"{where}: 'thing' and 'port' are required")
        if not THING_NAME.fullmatch(thing):
            raise ConfigError(
                f"{where}: thing {thing!r} must be 1-128 characters of a-z A-Z 0-9 : _ -"
            )
        if thing in seen:
            raise ConfigError(f"{where}: thing '{thing}' is listed twice")
        seen.add(thing)
        framing = _get(d, "framing", str, where, "console")
        if framing not in FRAMINGS:
            raise ConfigError(f"{where}: framing must be one of {FRAMINGS}")
        board = _get(d, "board", str, where)
        if board is not None:
            try:
                load_board(board)
            except LayoutError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
        baud = _get(d, "baud", int, where, 115200)
        if baud <= 0:
            raise ConfigError(f"{where}: 'baud' must be a positive integer, got {baud}")
        devices.append(DeviceConfig(thing, port_s, board, baud, framing))
    policy_t = data.get("policy", {})
    signing_t = data.get("signing", {})
    download_t = data.get("download", {})
    for name, t in (("policy", policy_t), ("signing", signing_t), ("download", download_t)):
        if not isinstance(t, dict):
            raise ConfigError(f"[{name}] must be a table")
    policy = _get(policy_t, "confirm", str, "[policy]", "device")
    if policy not in POLICIES:
        raise ConfigError(f"[policy]: confirm must be one of {POLICIES}, got '{policy}'")
    state_dir = _path(base, _get(data, "state_dir", str, "top level", "state"))
    assert state_dir is not None
    trusted = [_path(base, t) for t in _strings(signing_t, "trusted_keys", "[signing]") or []]
    hosts = _strings(download_t, "allowed_hosts", "[download]")
    other = _get(policy_t, "other_jobs", str, "[policy]", "reject")
    if other not in ("reject", "ignore"):
        raise ConfigError("[policy]: other_jobs must be 'reject' or 'ignore'")
    signing_key = _path(base, _get(signing_t, "key", str, "[signing]"))
    download_ca = _path(base, _get(download_t, "ca", str, "[download]"))
    for where, files in (("[signing]", [signing_key, *trusted]), ("[download]", [download_ca])):
        for f in files:
            if f is not None:
                _need_file(f, where)
    return BridgeConfig(
        broker=broker,
        devices=devices,
        state_dir=state_dir,
        signing_key=signing_key,
        trusted_keys=[t for t in trusted if t is not None],
        policy=policy,
        confirm_timeout_s=_seconds(policy_t, "confirm_timeout_s", "[policy]", 60.0),
        boot_timeout_s=_seconds(policy_t, "boot_timeout_s", "[policy]", 30.0),
        step_timeout_min=_ranged(policy_t, "step_timeout_min", "[policy]", 1, MAX_STEP_TIMEOUT_MIN),
        download_ca=download_ca,
        allow_http=_get(download_t, "allow_http", bool, "[download]", False),
        allowed_hosts=hosts or None,
        progress_interval_s=_seconds(
            policy_t, "progress_interval_s", "[policy]", 5.0, zero_ok=True
        ),
        other_jobs=other,
    )


def load_config(path: str | Path) -> BridgeConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {p} is not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {p} is not valid TOML: {exc}") from exc
    return parse_config(data, p.resolve().parent)


def prepare_state_dir(path: Path) -> None:
    """Create the state directory (0700), or tighten one that exists; ConfigError if it
    cannot be used."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)
    except FileExistsError as exc:
        raise ConfigError(
            f"state_dir {path} is a file, not a directory: set state_dir to a directory"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot create state_dir {path}: {exc.strerror}: set state_dir to a directory "
            "the bridge may write"
        ) from exc
