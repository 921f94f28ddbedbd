"""Security properties of the bridge: (g) the daemon runs as a normal user, and nothing in
the bridge asks for root.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from security_kit import REPO, THING, mode_of

from harness.mosquitto import HOST, Mosquitto

pytestmark = pytest.mark.timeout(120)


# -- (g) a normal user runs the daemon ------------------------------------------------------------

# Run the CLI in a child process; as root, drop to "nobody" once the interpreter and the modules
# are loaded (the interpreter may live where nobody cannot read, e.g. under /root).
CHILD: Final = """
import os, sys
from host_bridge import cli, config, daemon, logs, store
from host_bridge.jobs import client
import paho.mqtt.client, sqlite3, ssl, logging.handlers, encodings.idna
cli.build_parser()
uid = int(sys.argv[1])
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
print("uid", os.geteuid(), flush=True)
sys.exit(cli.main(sys.argv[2:]))
"""
NOBODY: Final = 65534


@pytest.fixture
def user_dir() -> Iterator[Path]:
    """A directory the unprivileged user owns (pytest's own tmp is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="fota-user-"))
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def child(config: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(NOBODY), "run", "--config", str(config), *args],
        cwd="/",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def write_config(directory: Path, port: int) -> Path:
    config = directory / "bridge.toml"
    config.write_text(
        f'state_dir = "state"\n[broker]\nhost = "{HOST}"\nport = {port}\n'
        f'insecure_plaintext = true\n[[device]]\nthing = "{THING}"\nport = "/dev/null"\n'
    )
    if os.geteuid() == 0:
        os.chown(config, NOBODY, NOBODY)
    return config


def test_run_check_as_a_normal_user(user_dir: Path) -> None:
    proc = child(write_config(user_dir, 1883), "--check")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    uid_line, summary = out.splitlines()[:2]
    assert uid_line != "uid 0" and "OK (1 devices" in summary and "PLAINTEXT" in summary


def test_the_daemon_runs_as_a_normal_user(user_dir: Path, tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        proc = child(write_config(user_dir, broker.port))
        assert proc.stderr is not None
        lines: list[str] = []
        connected = threading.Event()

        def read(stream: Any) -> None:
            for line in stream:
                lines.append(line)
                if re.search(r"connected to 127\.0\.0\.1:\d+; 1 things", line):
                    connected.set()

        reader = threading.Thread(target=read, args=(proc.stderr,), daemon=True)
        reader.start()
        try:
            assert connected.wait(30), "".join(lines)
        finally:
            proc.terminate()
            out = proc.stdout.read() if proc.stdout else ""
            proc.wait(30)
            reader.join(10)
    assert out.splitlines()[0] != "uid 0"
    assert proc.returncode == 0, "".join(lines)
    state = user_dir / "state"
    assert mode_of(state) == 0o700 and mode_of(state / "bridge.sqlite") == 0o600
    if os.geteuid() == 0:
        assert state.stat().st_uid == NOBODY


def test_the_bridge_never_asks_for_root() -> None:
    """Nothing in the bridge changes user or owner, or checks for uid 0."""
    pattern = re.compile(
        r"\b(setuid|setgid|seteuid|setegid|setgroups|chown|lchown|fchown|"
        r"geteuid\(\)\s*==\s*0|getuid\(\)\s*==\s*0)\b"
    )
    hits = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for package in ("host_bridge", "bootloader", "mcu")
        for path in sorted((REPO / package).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []
