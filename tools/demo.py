"""``just demo``: the whole system on one machine, no cloud, no hardware.

mosquitto on a free port, the local AWS IoT Jobs service with its HTTPS file server, two
virtual MCUs (fota-vmcu on ptys, MCUboot model + the mcu/ receiver) and the bridge; then:

  (a) a job in the seed's format (bc_idx/bc_crc/bc_size/bc_url) -> v1.1.0, SUCCEEDED
  (b) a firmware that crashes before confirming itself -> FAILED, reason: reverted
  (c) a malformed job document -> REJECTED with its reason
  (d) one job updating both devices at once -> v1.3.0, SUCCEEDED twice

Progress is shown while it runs and a summary table at the end; every process it started
is stopped; exit 0 when every case ended as expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootloader.formats.layout import load_board
from bootloader.sim.testimages import payload
from fota_common.cli import OneLineParser, run
from harness.procs import find_mosquitto, free_port, port_open
from host_bridge.image.sign import SigningParams, generate_key, sign_payload
from localjobs.cli import DB_NAME, FILES_DIR
from localjobs.store import JobStore

PY = sys.executable
BOARD = "nrf52840"
BAUD = 460800
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")


def say(msg: str) -> None:
    print(msg, flush=True)


def need_mosquitto() -> str:
    path = find_mosquitto()
    if path is None:
        raise SystemExit(
            "demo: mosquitto is not installed: `sudo apt-get install mosquitto` (Debian/Ubuntu) "
            "or `brew install mosquitto`, then run `just demo` again"
        )
    return path


class Procs:
    """Every process the demo starts; all stopped at the end, whatever happens."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append((name, p))
        return p

    def stop_all(self) -> None:
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def check_alive(self) -> None:
        for name, p in self.procs:
            if p.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-600:]
                raise SystemExit(f"demo: {name} exited ({p.returncode}):\n{tail}")


def wait_for(what: str, cond: Any, timeout_s: float, procs: Procs) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        procs.check_alive()
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


@dataclass
class Case:
    label: str
    job_id: str
    things: list[str]
    expect: str
    reason_has: str = ""


def make_images(work: Path) -> dict[str, Path]:
    layout = load_board(BOARD)
    key = work / "signing-key.pem"
    generate_key(key, "ecdsa-p256")
    params = SigningParams.from_layout(layout)
    firmware = {
        "1.0.0": b"",
        "1.1.0": b"",
        "1.2.0": b'#vmcu:{"on_boot": "crash"}\n',
        "1.3.0": b"",
    }
    out = {"key": key}
    for version, head in firmware.items():
        data = sign_payload(head + payload(96 * 1024, version), key, version, params)
        path = work / f"app-{version}.signed.bin"
        path.write_bytes(data)
        out[version] = path
    return out


def publish(image: Path, jobs_state: Path) -> tuple[str, int, str, str]:
    """Copy an image into the served directory: (name, size, sha256 hex, md5 hex)."""
    data = image.read_bytes()
    files = jobs_state / FILES_DIR
    files.mkdir(parents=True, exist_ok=True)
    name = image.name
    (files / name).write_bytes(data)
    return name, len(data), hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()


def create_job(store: JobStore, job_id: str, things: list[str], doc: dict[str, Any]) -> None:
    store.create_job(job_id, things, json.dumps(doc), None)


def status_of(store: JobStore, job_id: str) -> dict[str, dict[str, Any]]:
    job = store.describe(job_id)
    return {
        e.thing_name: {"status": e.status, "details": dict(e.status_details)}
        for e in job.executions
    }


def watch(
    store: JobStore,
    cases: list[Case],
    timeout_s: float,
    procs: Procs,
    started: dict[str, float],
    ended: dict[tuple[str, str], float],
) -> None:
    """Print each execution's phase/progress as it changes, until all are terminal."""
    last: dict[tuple[str, str], str] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = True
        for c in cases:
            for thing, st in status_of(store, c.job_id).items():
                d = st["details"]
                line = f"{st['status']:<11} {d.get('phase', ''):<11} {d.get('progress', '')}"
                if last.get((c.job_id, thing)) != line:
                    last[(c.job_id, thing)] = line
                    say(f"  {c.label:<26} {thing:<9} {line}")
                if st["status"] in TERMINAL:
                    ended.setdefault((c.job_id, thing), time.monotonic() - started[c.job_id])
                else:
                    done = False
        if done:
            return
        procs.check_alive()
        time.sleep(0.25)
    raise SystemExit("demo: jobs did not finish in time (see the logs)")


def main(argv: list[str] | None = None) -> int:
    """Run under the one CLI runner: every error is one line and exit 2."""
    return run("demo", lambda: _main(argv))


def _main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    mosquitto = need_mosquitto()
    work = Path(tempfile.mkdtemp(prefix="fota-demo-"))
    logs = work / "logs"
    logs.mkdir()
    procs = Procs(logs)
    results: list[tuple[Case, str, dict[str, Any], float]] = []
    try:
        with ExitStack() as stack:
            stack.callback(procs.stop_all)
            say(f"demo: working in {work}")
            images = make_images(work)
            mport = free_port()
            conf = work / "mosquitto.conf"
            conf.write_text(
                f"listener {mport} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            )
            procs.start("mosquitto", [mosquitto, "-c", str(conf)])
            wait_for("mosquitto", lambda: port_open(mport), 10, procs)
            say(f"demo: mosquitto on 127.0.0.1:{mport}")
            jobs_state = work / "jobs"
            hport = free_port()
            procs.start(
                "jobs-service",
                [
                    PY,
                    "-m",
                    "localjobs.cli",
                    "serve",
                    "--broker",
                    f"127.0.0.1:{mport}",
                    "--state-dir",
                    str(jobs_state),
                    "--http-port",
                    str(hport),
                    "--json",
                ],
            )
            wait_for("the jobs service", lambda: port_open(hport), 20, procs)
            ca = wait_for(
                "the file server CA", lambda: next(jobs_state.glob("**/ca.pem"), None), 10, procs
            )
            say(f"demo: local jobs service up; files on https://127.0.0.1:{hport}/files/")
            devices = {}
            for thing in ("sensor-a", "sensor-b"):
                link = work / f"tty-{thing}"
                procs.start(
                    thing,
                    [
                        PY,
                        "-m",
                        "bootloader.sim.vmcu",
                        "--board",
                        BOARD,
                        "--flash",
                        str(work / f"{thing}.flash"),
                        "--link",
                        str(link),
                        "--baud",
                        str(BAUD),
                        "--load",
                        str(images["1.0.0"]),
                    ],
                )
                devices[thing] = link
            for thing in devices:
                wait_for(
                    thing, lambda p=thing: "boot 1:" in (logs / f"{p}.log").read_text(), 15, procs
                )
            say(f"demo: 2 virtual MCUs (board {BOARD}, {BAUD} baud) running v1.0.0")
            cfg = work / "bridge.toml"
            dev_tables = "".join(
                f'\n[[device]]\nthing = "{t}"\nport = "{p}"\nboard = "{BOARD}"\nbaud = {BAUD}\n'
                for t, p in devices.items()
            )
            cfg.write_text(
                f'state_dir = "{work / "bridge-state"}"\n\n[broker]\nhost = "127.0.0.1"\n'
                f'port = {mport}\nclient_id = "demo-gateway"\ninsecure_plaintext = true\n\n'
                f'[download]\nca = "{ca}"\n\n[signing]\ntrusted_keys = ["{images["key"]}"]\n\n'
                f'[policy]\nconfirm = "device"\nconfirm_timeout_s = 8\nboot_timeout_s = 15\n'
                f"progress_interval_s = 0.5\n{dev_tables}"
            )
            procs.start("bridge", [PY, "-m", "host_bridge.cli", "run", "--config", str(cfg)])
            wait_for(
                "the bridge", lambda: "connected to" in (logs / "bridge.log").read_text(), 20, procs
            )
            say("demo: bridge connected\n")
            store = JobStore(jobs_state / DB_NAME)
            stack.callback(store.close)
            started: dict[str, float] = {}
            ended: dict[tuple[str, str], float] = {}
            url = f"https://127.0.0.1:{hport}/files/"

            def run(batch: list[tuple[Case, dict[str, Any]]]) -> None:
                for case, doc in batch:
                    started[case.job_id] = time.monotonic()
                    create_job(store, case.job_id, case.things, doc)
                    say(f"demo: created {case.job_id} ({case.label}) for {', '.join(case.things)}")
                watch(store, [c for c, _ in batch], 180, procs, started, ended)

            name, size, sha, md5 = publish(images["1.1.0"], jobs_state)
            a = Case("(a) seed format -> 1.1.0", "demo-a-seed", ["sensor-a"], "SUCCEEDED")
            c = Case("(c) malformed document", "demo-c-bad", ["sensor-b"], "REJECTED", "bc_")
            run(
                [
                    (
                        a,
                        {
                            "bc_idx": 1,
                            "bc_crc": md5,
                            "bc_size": size,
                            "bc_url": "${aws:iot:s3-presigned-url:" + url + name + "}",
                        },
                    ),
                    (c, {"bc_idx": 1, "bc_crc": "not-an-md5", "bc_size": -5, "bc_url": url + name}),
                ]
            )
            name, size, sha, md5 = publish(images["1.2.0"], jobs_state)
            b = Case("(b) crashing firmware", "demo-b-crash", ["sensor-a"], "FAILED", "revert")
            run(
                [
                    (
                        b,
                        {
                            "operation": "fota",
                            "url": "${aws:iot:s3-presigned-url:" + url + name + "}",
                            "size": size,
                            "sha256": sha,
                            "version": "1.2.0",
                        },
                    )
                ]
            )
            name, size, sha, md5 = publish(images["1.3.0"], jobs_state)
            d = Case(
                "(d) both at once -> 1.3.0", "demo-d-both", ["sensor-a", "sensor-b"], "SUCCEEDED"
            )
            run(
                [
                    (
                        d,
                        {
                            "operation": "fota",
                            "url": "${aws:iot:s3-presigned-url:" + url + name + "}",
                            "size": size,
                            "sha256": sha,
                            "version": "1.3.0",
                        },
                    )
                ]
            )
            for case in (a, b, c, d):
                for thing, st in status_of(store, case.job_id).items():
                    results.append((case, thing, st, ended.get((case.job_id, thing), 0.0)))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return summary(results)


def summary(results: list[tuple[Case, str, dict[str, Any], float]]) -> int:
    ok_all = True
    rows = []
    for case, thing, st, secs in results:
        reason = st["details"].get("reason", "")
        ok = st["status"] == case.expect and case.reason_has.lower() in reason.lower()
        ok_all &= ok
        rows.append((case.label, thing, st["status"], reason, f"{secs:.1f}", "ok" if ok else "NO"))
    say("\nsummary")
    head = ("job", "device", "status", "reason", "seconds", "expected")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    widths[3] = min(widths[3], 70)
    for r in [head, *rows]:
        say("  " + "  ".join(str(v)[: widths[i]].ljust(widths[i]) for i, v in enumerate(r)))
    say("\ndemo: " + ("every case ended as expected" if ok_all else "SOME CASES DID NOT"))
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
