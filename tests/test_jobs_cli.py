"""``fota-bridge jobs serve|create|list|describe|cancel`` through the main command line: the
store commands in-process, errors as a shell sees them (one line, exit 2), and an operator's
whole workflow as processes: ``jobs serve``, ``run``, ``jobs create --image``, ``jobs describe``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import pytest

from bootloader.formats.layout import load_board
from bootloader.sim.testimages import payload, sign
from fota_common.cli import EXIT_ERROR, EXIT_OK
from harness.bridge import BridgeProcess
from harness.mosquitto import BrokerError, Mosquitto
from harness.procs import REPO_ROOT, free_port
from harness.vmcu import Vmcu
from host_bridge import cli

BOARD: Final = "nrf52840"
WAIT_S: Final = 30.0


def env() -> dict[str, str]:
    e = dict(os.environ, PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), e.get("PYTHONPATH")) if p)
    return e


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host_bridge.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env(),
        check=False,
    )


def main_json(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Any:
    code = cli.main([*map(str, args), "--json"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    return json.loads(out)


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == EXIT_ERROR, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fota-bridge: error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_store_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "jobs"
    image = tmp_path / "app.img"
    image.write_bytes(b"\x3d\xb8\xf3\x96" + bytes(200))
    job = main_json(
        capsys,
        "jobs",
        "create",
        "--state-dir",
        state,
        "--thing",
        "t1",
        "--thing",
        "t2",
        "--image",
        image,
        "--version",
        "1.2.3",
        "--job-id",
        "j1",
        "--http-port",
        "8443",
    )
    assert (job["jobId"], job["targets"]) == ("j1", ["t1", "t2"])
    assert job["document"]["version"] == "1.2.3" and job["document"]["size"] == 204
    assert job["document"]["url"].startswith("${aws:iot:s3-presigned-url:https://127.0.0.1:8443/")
    listed = main_json(capsys, "jobs", "list", "--state-dir", state)
    assert [j["jobId"] for j in listed["jobs"]] == ["j1"]
    described = main_json(capsys, "jobs", "describe", "j1", "--state-dir", state)
    assert [e["status"] for e in described["executions"]] == ["QUEUED", "QUEUED"]
    canceled = main_json(capsys, "jobs", "cancel", "j1", "--state-dir", state)
    assert canceled["status"] == "CANCELED"

    assert cli.main(["jobs", "list", "--state-dir", str(state)]) == EXIT_OK
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["JOB", "ID"] and table[1].split()[:2] == ["j1", "CANCELED"]


def test_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    state = tmp_path / "jobs"
    one_line_error(run_cli("jobs", "describe", "nope", "--state-dir", state), "no job 'nope'")
    one_line_error(
        run_cli(
            "jobs",
            "create",
            "--state-dir",
            state,
            "--thing",
            "t1",
            "--image",
            tmp_path / "absent.img",
            "--version",
            "1.0.0",
        ),
        "cannot read image",
    )
    one_line_error(
        run_cli(
            "jobs",
            "create",
            "--state-dir",
            state,
            "--thing",
            "t1",
            "--image",
            tmp_path / "absent.img",
        ),
        "--version",
    )
    doc = tmp_path / "doc.json"
    doc.write_text('{"operation": "x"}')
    assert (
        run_cli(
            "jobs",
            "create",
            "--state-dir",
            state,
            "--thing",
            "t1",
            "--document",
            doc,
            "--job-id",
            "j1",
        ).returncode
        == 0
    )
    one_line_error(
        run_cli(
            "jobs",
            "create",
            "--state-dir",
            state,
            "--thing",
            "t1",
            "--document",
            doc,
            "--job-id",
            "j1",
        ),
        "already exists",
    )
    one_line_error(
        run_cli("jobs", "create", "--state-dir", state, "--thing", "bad/thing", "--document", doc)
    )
    one_line_error(
        run_cli("jobs", "serve", "--state-dir", state, "--broker", "nohost"), "HOST:PORT"
    )
    port = free_port()  # nothing listens there
    one_line_error(
        run_cli(
            "jobs",
            "serve",
            "--state-dir",
            state,
            "--broker",
            f"127.0.0.1:{port}",
            "--http-port",
            "0",
        ),
        f"127.0.0.1:{port}",
    )


def test_an_operator_workflow(tmp_path: Path) -> None:
    """jobs serve + run + jobs create --image: the job ends SUCCEEDED on the device."""
    try:
        broker = Mosquitto(tmp_path / "mq")
        broker.start()
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    state = tmp_path / "jobs"
    layout = load_board(BOARD)
    v1 = sign(payload(2000, "cli-v1"), "1.0.0", layout)
    v2 = tmp_path / "app-1.1.0.bin"
    v2.write_bytes(payload(2500, "cli-v2"))  # a raw binary: the bridge signs it
    serve_log = tmp_path / "serve.log"
    with open(serve_log, "wb") as out:
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "host_bridge.cli",
                "jobs",
                "serve",
                "--broker",
                f"127.0.0.1:{broker.port}",
                "--state-dir",
                str(state),
                "--http-port",
                "0",
                "--poll-interval",
                "0.2",
                "--json",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env(),
        )
    vm = Vmcu(tmp_path, BOARD, load=v1, name="sensor-a")
    bridge = None
    try:
        deadline = time.monotonic() + WAIT_S
        while b'"broker"' not in serve_log.read_bytes():  # serve --json: ready
            assert serve.poll() is None, serve_log.read_text()
            assert time.monotonic() < deadline, serve_log.read_text()
            time.sleep(0.05)
        vm.start()
        key = tmp_path / "signing.pem"
        assert run_cli("keys", "new", key).returncode == 0
        config = tmp_path / "bridge.toml"
        config.write_text(
            f'state_dir = "{tmp_path / "bridge-state"}"\n[broker]\nhost = "127.0.0.1"\n'
            f"port = {broker.port}\ninsecure_plaintext = true\n"
            f'[download]\nca = "{state / "tls" / "ca.pem"}"\n'
            f'[signing]\nkey = "{key}"\n'
            "[policy]\nconfirm_timeout_s = 5\nboot_timeout_s = 15\nprogress_interval_s = 0.2\n"
            f'[[device]]\nthing = "sensor-a"\nport = "{vm.link}"\nboard = "{BOARD}"\n'
        )
        bridge = BridgeProcess(config, tmp_path / "bridge.log").start()
        created = run_cli(
            "jobs",
            "create",
            "--state-dir",
            state,
            "--thing",
            "sensor-a",
            "--image",
            v2,
            "--version",
            "1.1.0",
            "--job-id",
            "op-1",
        )
        assert created.returncode == 0, created.stderr
        assert created.stdout.strip() == "created job op-1 for sensor-a"
        deadline = time.monotonic() + WAIT_S
        while True:
            shown = run_cli("jobs", "describe", "op-1", "--state-dir", state, "--json")
            execution = json.loads(shown.stdout)["executions"][0]
            if execution["status"] not in ("QUEUED", "IN_PROGRESS"):
                break
            bridge.alive()
            assert time.monotonic() < deadline, (execution, bridge.text())
            time.sleep(0.2)
        assert execution["status"] == "SUCCEEDED", execution
        assert execution["statusDetails"]["version"] == "1.1.0"
        vm.wait_for_log(r"boot \d+: swap type test, running version 1\.1\.0")
        text = run_cli("jobs", "describe", "op-1", "--state-dir", state).stdout
        assert "SUCCEEDED" in text and "X-Amz" not in text
        assert "X-Amz" not in bridge.text()
    finally:
        if bridge is not None and bridge.running:
            bridge.terminate()
        vm.close()
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
        try:
            assert serve.wait(10) == 0, serve_log.read_text()
        finally:
            if serve.poll() is None:
                serve.kill()
            broker.stop()
