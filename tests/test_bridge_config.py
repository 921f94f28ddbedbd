"""``bridge.toml``: every mistake is one line that names the key, exit 2; ``run --check``
validates a configuration without connecting to anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from fota_common.cli import EXIT_ERROR
from harness.procs import REPO_ROOT
from host_bridge import cli
from host_bridge.config import load_config
from host_bridge.image.sign import generate_key

BROKER: Final = '[broker]\nhost = "127.0.0.1"\ninsecure_plaintext = true\n'
DEVICE: Final = '\n[[device]]\nthing = "sensor-01"\nport = "/dev/ttyUSB0"\n'
GOOD: Final = BROKER + DEVICE


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "host_bridge.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory with a CA, a client certificate and key (contents unread by --check)."""
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    return tmp_path


BAD: Final = [
    ("missing broker table", DEVICE, "missing [broker] table"),
    (
        "missing broker host",
        "[broker]\nport = 1883\ninsecure_plaintext = true\n" + DEVICE,
        "[broker]: 'host' is required",
    ),
    ("TLS without a CA", '[broker]\nhost = "h"\n' + DEVICE, "[broker]: 'ca' is required for TLS"),
    (
        "TLS CA file missing",
        '[broker]\nhost = "h"\nca = "absent-ca.pem"\n' + DEVICE,
        "[broker]: file {dir}/absent-ca.pem does not exist",
    ),
    (
        "TLS key file missing",
        '[broker]\nhost = "h"\nca = "ca.pem"\ncert = "client.pem"\nkey = "gone.key"\n' + DEVICE,
        "[broker]: file {dir}/gone.key does not exist",
    ),
    (
        "cert without key",
        '[broker]\nhost = "h"\nca = "ca.pem"\ncert = "client.pem"\n' + DEVICE,
        "[broker]: give both 'cert' and 'key' for mutual TLS, or neither",
    ),
    (
        "key without cert",
        '[broker]\nhost = "h"\nca = "ca.pem"\nkey = "client.key"\n' + DEVICE,
        "[broker]: give both 'cert' and 'key' for mutual TLS, or neither",
    ),
    ("port out of range", BROKER + "port = 70000\n" + DEVICE, "[broker]: 'port' must be 1..65535"),
    ("port of the wrong type", BROKER + 'port = "1883"\n' + DEVICE, "[broker]: 'port' must be int"),
    ("no devices", BROKER, "no [[device]] tables"),
    (
        "device without a port",
        BROKER + '\n[[device]]\nthing = "a"\n',
        "[[device]] #1: 'thing' and 'port' are required",
    ),
    ("unknown board", GOOD + 'board = "nrf99999"\n', "[[device]] #1: unknown board 'nrf99999'"),
    (
        "duplicate thing",
        GOOD + DEVICE.replace("ttyUSB0", "ttyUSB1"),
        "[[device]] #2: thing 'sensor-01' is listed twice",
    ),
    ("bad framing", GOOD + 'framing = "slip"\n', "[[device]] #1: framing must be one of"),
    ("bad baud", GOOD + "baud = 0\n", "[[device]] #1: 'baud' must be a positive integer"),
    (
        "bad confirm policy",
        GOOD + '\n[policy]\nconfirm = "nobody"\n',
        "[policy]: confirm must be one of ('device', 'bridge'), got 'nobody'",
    ),
    (
        "bad other_jobs policy",
        GOOD + '\n[policy]\nother_jobs = "maybe"\n',
        "[policy]: other_jobs must be 'reject' or 'ignore'",
    ),
    (
        "negative timeout",
        GOOD + "\n[policy]\nconfirm_timeout_s = -1\n",
        "[policy]: 'confirm_timeout_s' must be a number of seconds above 0",
    ),
    ("policy not a table", "policy = 3\n" + GOOD, "[policy] must be a table"),
    (
        "step timeout out of range",
        GOOD + "\n[policy]\nstep_timeout_min = 0\n",
        "[policy]: 'step_timeout_min' must be 1..10080",
    ),
    (
        "trusted key missing",
        GOOD + '\n[signing]\ntrusted_keys = ["nokey.pem"]\n',
        "[signing]: file {dir}/nokey.pem does not exist",
    ),
    (
        "signing key missing",
        GOOD + '\n[signing]\nkey = "nokey.pem"\n',
        "[signing]: file {dir}/nokey.pem does not exist",
    ),
    (
        "trusted keys not strings",
        GOOD + "\n[signing]\ntrusted_keys = [1]\n",
        "[signing]: 'trusted_keys' must be a list of non-empty strings",
    ),
    (
        "download CA missing",
        GOOD + '\n[download]\nca = "no-ca.pem"\n',
        "[download]: file {dir}/no-ca.pem does not exist",
    ),
    ("not TOML", "[broker\nhost = 1\n", "is not valid TOML"),
]


@pytest.mark.parametrize(
    ("snippet", "error"), [(s, e) for _, s, e in BAD], ids=[name for name, _, _ in BAD]
)
def test_bad_config_is_one_line_exit_2(
    files: Path, capsys: pytest.CaptureFixture[str], snippet: str, error: str
) -> None:
    config = files / "bridge.toml"
    config.write_text(snippet)
    code = cli.main(["run", "--config", str(config), "--check"])
    out, err = capsys.readouterr()
    assert code == EXIT_ERROR
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fota-bridge: error: ")
    assert error.format(dir=files) in lines[0], lines[0]


def test_unreadable_trusted_key_fails_check(files: Path) -> None:
    (files / "junk.pem").write_text("not a key\n")
    config = files / "bridge.toml"
    config.write_text(GOOD + '\n[signing]\ntrusted_keys = ["junk.pem"]\n')
    proc = run_cli("run", "--config", config, "--check")
    assert proc.returncode == EXIT_ERROR, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "junk.pem is not a usable public key" in proc.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    proc = run_cli("run", "--config", tmp_path / "absent.toml", "--check")
    assert proc.returncode == EXIT_ERROR
    assert proc.stderr.startswith("fota-bridge: error: cannot read config ")
    assert proc.stderr.count("\n") == 1


def test_check_prints_a_summary(files: Path) -> None:
    config = files / "bridge.toml"
    config.write_text(GOOD + DEVICE.replace("sensor-01", "sensor-02").replace("USB0", "USB1"))
    proc = run_cli("run", "--config", config, "--check")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == f"{config}: OK (2 devices, broker 127.0.0.1:1883, PLAINTEXT)\n"

    config.write_text(
        '[broker]\nhost = "iot.example"\nca = "ca.pem"\ncert = "client.pem"\n'
        'key = "client.key"\n' + DEVICE
    )
    proc = run_cli("run", "--config", config, "--check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{config}: OK (1 devices, broker iot.example:8883, mutual TLS)\n"


def test_the_example_config_checks_once_its_files_exist(tmp_path: Path) -> None:
    example = tmp_path / "bridge.toml"
    shutil.copy(REPO_ROOT / "examples" / "bridge.toml", example)
    for name in (
        "certs/AmazonRootCA1.pem",
        "certs/gateway-01.cert.pem",
        "certs/gateway-01.private.key",
    ):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("pem\n")
    (tmp_path / "keys").mkdir()
    generate_key(tmp_path / "keys" / "firmware-signing.pem")
    cfg = load_config(example)
    assert [d.thing for d in cfg.devices] == ["sensor-01", "sensor-02"]
    assert cfg.broker.tls is not None and cfg.broker.tls.cert is not None
    proc = run_cli("run", "--config", example, "--check")
    assert proc.returncode == 0, proc.stderr
    assert "OK (2 devices" in proc.stdout and "mutual TLS" in proc.stdout
