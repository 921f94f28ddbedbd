"""``fota-bridge jobs``: the store commands in-process, and ``serve`` as a real process with
mosquitto, a device and an HTTPS download of the image it was offered."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from jobs_device import JobsDevice

from harness.mosquitto import BrokerError, Mosquitto
from localjobs.cli import add_jobs_parser, cmd_list, main_jobs

REPO = Path(__file__).resolve().parent.parent
IMAGE = b"\x3d\xb8\xf3\x96" + bytes(range(256)) * 8
WAIT_S = 10.0


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main_jobs(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_create_from_an_image_list_describe_cancel(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "app v2.bin"
    image.write_bytes(IMAGE)
    code, out, err = run(
        capsys,
        "create",
        "--state-dir",
        str(state),
        "--thing",
        "t1",
        "--thing",
        "t2",
        "--image",
        str(image),
        "--version",
        "2.0.1+7",
        "--job-id",
        "fw-2",
        "--json",
    )
    assert (code, err) == (0, "")
    job = json.loads(out)
    digest = hashlib.sha256(IMAGE).hexdigest()
    name = f"{digest[:12]}-app_v2.bin"
    assert job["jobId"] == "fw-2" and job["targets"] == ["t1", "t2"]
    assert job["document"] == {
        "operation": "fota",
        "url": f"${{aws:iot:s3-presigned-url:https://127.0.0.1:8443/files/{name}}}",
        "size": len(IMAGE),
        "sha256": digest,
        "version": "2.0.1+7",
    }
    assert (state / "files" / name).read_bytes() == IMAGE

    code, out, _ = run(
        capsys,
        "create",
        "--state-dir",
        str(state),
        "--thing",
        "t1",
        "--document",
        str(_doc(tmp_path, {"operation": "custom"})),
    )
    assert code == 0 and out.startswith("created job job-")

    code, out, _ = run(capsys, "list", "--state-dir", str(state))
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("JOB ID") and len(lines) == 3
    assert "fw-2" in lines[1] and "2 QUEUED" in lines[1]
    code, out, _ = run(capsys, "list", "--state-dir", str(state), "--json")
    assert [j["jobId"] for j in json.loads(out)["jobs"]] == ["fw-2", lines[2].split()[0]]

    code, out, _ = run(capsys, "describe", "fw-2", "--state-dir", str(state), "--json")
    assert [e["thingName"] for e in json.loads(out)["executions"]] == ["t1", "t2"]
    code, out, _ = run(capsys, "describe", "fw-2", "--state-dir", str(state))
    assert code == 0 and "t2" in out and "QUEUED" in out

    code, out, _ = run(capsys, "cancel", "fw-2", "--state-dir", str(state))
    assert (code, out.strip()) == (0, "canceled job fw-2 (2 CANCELED)")


def _doc(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["describe", "nope"], "no job 'nope'"),
        (["cancel", "nope"], "no job 'nope'"),
        (["create", "--thing", "t1", "--image", "IMAGE"], "--version"),
        (["create", "--thing", "t1", "--image", "IMAGE", "--version", "v1"], "--version"),
        (
            ["create", "--thing", "t1", "--image", "/nonexistent.bin", "--version", "1"],
            "cannot read image",
        ),
        (["create", "--thing", "bad name", "--document", "DOC"], "thingName"),
        (["create", "--thing", "t1", "--document", "DOC", "--job-id", "a.b"], "jobId"),
        (["create", "--thing", "t1", "--document", "BADDOC"], "not JSON"),
        (["create", "--thing", "t1", "--document", "DOC", "--step-timeout", "0"], "stepTimeout"),
        (["serve", "--broker", "nohost"], "HOST:PORT"),
        (["serve", "--broker", "127.0.0.1:1883", "--cert", "c.pem"], "--ca"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    tmp_path: Path,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    (tmp_path / "image.bin").write_bytes(IMAGE)
    subst = {
        "IMAGE": str(tmp_path / "image.bin"),
        "DOC": str(_doc(tmp_path, {"a": 1})),
        "BADDOC": str(tmp_path / "bad.json"),
    }
    (tmp_path / "bad.json").write_text("{oops")
    code, out, err = run(capsys, *[subst.get(a, a) for a in argv], "--state-dir", str(state))
    assert code == 2 and out == ""
    assert err.startswith("fota-bridge jobs: error: ") and err.count("\n") == 1, err
    assert message in err


def test_add_jobs_parser_plugs_into_a_cli(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="fota-bridge")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_jobs_parser(sub)
    args = parser.parse_args(["jobs", "list", "--state-dir", str(tmp_path), "--json"])
    assert args.fn is cmd_list and args.json and args.state_dir == str(tmp_path)


# -- serve, as a process -------------------------------------------------------------------------
class Serve:
    """``python -m localjobs.cli serve`` with its stdout read by a thread."""

    def __init__(self, argv: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localjobs.cli", "serve", *argv],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(
            target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True
        ).start()
        threading.Thread(
            target=self._read, args=(self.proc.stderr, self.errors.append), daemon=True
        ).start()

    @staticmethod
    def _read(stream: IO[str], sink: Any) -> None:
        for line in iter(stream.readline, ""):
            sink(line.rstrip("\n"))

    def ready(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.lines.get(timeout=WAIT_S)))
        except queue.Empty:
            self.proc.kill()
            self.proc.wait(WAIT_S)
            raise AssertionError("serve did not start:\n" + "\n".join(self.errors)) from None

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(WAIT_S)
            raise AssertionError("serve ignored SIGTERM") from None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    try:
        mq = Mosquitto(tmp_path / "mq")
        mq.start()
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield mq
    mq.stop()


def test_serve_offers_created_jobs_and_serves_their_images(
    tmp_path: Path, state: Path, broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    serve = Serve(
        [
            "--broker",
            f"{broker.host}:{broker.port}",
            "--state-dir",
            str(state),
            "--http-port",
            "0",
            "--poll-interval",
            "0.05",
            "--json",
        ]
    )
    try:
        info = serve.ready()
        assert info["broker"] == f"{broker.host}:{broker.port}" and not info["tls"]
        with JobsDevice(broker.host, broker.port, "gw-1") as dev:
            image = tmp_path / "app.bin"
            image.write_bytes(IMAGE)
            code, out, err = run(
                capsys,
                "create",
                "--state-dir",
                str(state),
                "--thing",
                "gw-1",
                "--image",
                str(image),
                "--version",
                "1.4.0",
                "--json",
            )
            assert code == 0, err
            job_id = json.loads(out)["jobId"]
            # the service finds the new job in the store and tells the device
            execution = dev.expect("notify-next", WAIT_S)["execution"]
            assert execution["jobId"] == job_id
            doc = execution["jobDocument"]
            assert doc["url"].startswith(info["files"])  # the port serve really listens on
            assert "X-Amz-Signature=" in doc["url"]
            ctx = ssl.create_default_context(cafile=info["ca"])
            with urllib.request.urlopen(doc["url"], context=ctx, timeout=WAIT_S) as resp:
                data = resp.read()
            assert hashlib.sha256(data).hexdigest() == doc["sha256"] and len(data) == doc["size"]

            kind, reply = dev.request("start-next", {"clientToken": "gw"})
            assert (kind, reply["execution"]["status"]) == ("accepted", "IN_PROGRESS")
            code, out, _ = run(capsys, "cancel", job_id, "--state-dir", str(state), "--force")
            assert code == 0
            assert set(dev.expect("notify-next", WAIT_S)) == {"timestamp"}  # queue empty
        assert serve.terminate() == 0, "\n".join(serve.errors)
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait(WAIT_S)
