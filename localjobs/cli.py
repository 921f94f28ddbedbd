"""``fota-bridge jobs``: the local jobs service and its job store, from the command line.

    jobs serve  --broker HOST:PORT [--state-dir DIR] [--http-port N] [--ca F [--cert F --key F]]
    jobs create --thing T [--thing T2 ...] (--document FILE | --image FILE --version V)
                [--job-id ID] [--step-timeout MIN]
    jobs list | describe ID | cancel ID [--force]          (each takes --json and --state-dir)

How devices hear of ``create`` and ``cancel``: these commands only write the SQLite store in
the state directory; the running service reads the store's change log every
``--poll-interval`` seconds (default 1) and publishes ``notify`` / ``notify-next``.  So the
commands need no broker address or credentials, and a job created while the service is
down is announced when it starts.

State directory (default ``$XDG_STATE_HOME/fota-bridge/jobs``): ``jobs.sqlite3`` (0600),
``files/`` (the served images), ``tls/`` (the file server's CA and certificate; keys 0600),
``url-secret`` (0600) and ``fileserver.json`` (the port ``serve`` listens on).

Also runnable alone: ``python -m localjobs.cli serve ...``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fota_common.cli import (
    EXIT_OK,
    OneLineParser,
    int_at_least,
    int_between,
    run,
    seconds,
)
from fota_common.errors import ConfigError
from fota_common.tls import check_tls_files
from localjobs import model as m
from localjobs.model import Job
from localjobs.store import JobStore

DB_NAME = "jobs.sqlite3"
FILES_DIR = "files"
PORT_FILE = "fileserver.json"
DEFAULT_HTTP_PORT = 8443
THROTTLE_RATE_PER_S, THROTTLE_BURST = 20.0, 40  # per thing, like AWS's RequestThrottled
VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+){0,2}(\+[0-9]+)?")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fota-bridge" / "jobs"


def parse_hostport(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6addr]:port``."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--broker must be HOST:PORT, not {text!r}")
    return host, int(port)


def _state(args: argparse.Namespace) -> Path:
    path = Path(args.state_dir) if args.state_dir else default_state_dir()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise ConfigError(
            f"the state directory {path} is a file: give --state-dir a directory"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot use the state directory {path}: {exc.strerror} (see --state-dir)"
        ) from exc
    return path


def _store(args: argparse.Namespace) -> JobStore:
    return JobStore(_state(args) / DB_NAME)


def _emit(args: argparse.Namespace, doc: Any, text: str, *, one_line: bool = False) -> None:
    if args.json:
        text = json.dumps(doc) if one_line else json.dumps(doc, indent=2)
    print(text, flush=True)


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _counts(job: Job) -> str:
    return ", ".join(f"{n} {s}" for s, n in job.counts().items())


# -- serve ---------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from localjobs.api import Throttle
    from localjobs.fileserver import FileServer
    from localjobs.service import JobsService, ServiceTls

    host, port = parse_hostport(args.broker)
    if (args.cert is None) != (args.key is None) or (args.cert and not args.ca):
        raise ConfigError("broker TLS needs --ca, and --cert with --key for a client certificate")
    tls = ServiceTls(args.ca, args.cert, args.key) if args.ca else None
    check_tls_files(args.ca, args.cert, args.key, ("--ca", "--cert", "--key"))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    state = _state(args)
    store = _store(args)
    try:
        files = FileServer(
            state / FILES_DIR, state, port=args.http_port, url_expires_s=args.url_expires
        ).start()
    except BaseException:
        store.close()
        raise
    stop = threading.Event()
    try:
        (state / PORT_FILE).write_text(json.dumps({"port": files.port}))
        service = JobsService(
            store,
            host,
            port,
            tls,
            presign=files.presign,
            throttle=Throttle(THROTTLE_RATE_PER_S, THROTTLE_BURST, time.time),
            poll_interval_s=args.poll_interval,
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        service.start()
        try:
            doc = {
                "broker": f"{host}:{port}",
                "tls": tls is not None,
                "files": f"https://127.0.0.1:{files.port}/files/",
                "ca": str(files.ca_path),
                "store": str(store.path),
            }
            _emit(
                args,
                doc,
                f"serving jobs on {host}:{port}; files on {doc['files']} "
                f"(CA {files.ca_path}); store {store.path}",
                one_line=True,
            )
            while not stop.wait(60.0):
                pass
        finally:
            service.stop()
    finally:
        files.stop()
        store.close()
    return EXIT_OK


# -- create --------------------------------------------------------------------------------
def _http_port(args: argparse.Namespace, state: Path) -> int:
    if args.http_port:
        return int(args.http_port)
    try:
        return int(json.loads((state / PORT_FILE).read_text())["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_HTTP_PORT


def _publish_image(image: Path, files: Path) -> tuple[str, int, str]:
    """Copy ``image`` into the served directory; (name, size, sha256 hex)."""
    try:
        data = image.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read image {image}: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    base = re.sub(r"[^A-Za-z0-9._-]", "_", image.name).lstrip("._-") or "image.bin"
    name = f"{digest[:12]}-{base}"[:255]
    target = files / name
    try:
        files.mkdir(parents=True, exist_ok=True)
        if not (target.is_file() and target.stat().st_size == len(data)):
            tmp = files / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.replace(target)
    except OSError as exc:
        raise ConfigError(f"cannot copy the image into {files}: {exc.strerror}") from exc
    return name, len(data), digest


def fota_document(url: str, size: int, sha256: str, version: str) -> str:
    """Our native job document; ``url`` is wrapped in AWS's presigned-URL placeholder."""
    doc = {
        "operation": "fota",
        "url": "${aws:iot:s3-presigned-url:" + url + "}",
        "size": size,
        "sha256": sha256,
        "version": version,
    }
    return json.dumps(doc, separators=(",", ":"))


def _new_job_id(prefix: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}-{stamp}-{secrets.token_hex(2)}"[-64:]


def cmd_create(args: argparse.Namespace) -> int:
    state = _state(args)
    if args.image:
        if not args.img_version or not VERSION_RE.fullmatch(args.img_version):
            raise ConfigError("--image needs --version MAJOR.MINOR.REVISION[+BUILD]")
        name, size, digest = _publish_image(Path(args.image), state / FILES_DIR)
        url = f"https://127.0.0.1:{_http_port(args, state)}/files/{name}"
        document = fota_document(url, size, digest, args.img_version)
        prefix = "fota-" + re.sub(r"[^0-9]", "_", args.img_version)
    else:
        try:
            document = Path(args.document).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the job document {args.document}: {exc.strerror}"
            ) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"the job document {args.document} is not UTF-8 text (byte {exc.start})"
            ) from None
        try:
            json.loads(document)
        except ValueError as exc:
            raise ConfigError(f"the job document {args.document} is not JSON: {exc}") from None
        prefix = "job"
    job_id = args.job_id or _new_job_id(prefix)
    with _store(args) as store:
        job = store.create_job(job_id, args.thing, document, args.step_timeout)
        doc = job.as_dict(store.clock(), executions=False)
    _emit(args, doc, f"created job {job.job_id} for {', '.join(doc['targets'])}")
    return EXIT_OK


# -- list / describe / cancel --------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        jobs = store.list_jobs()
        now = store.clock()
    if args.json:
        _emit(args, {"jobs": [j.as_dict(now, executions=False) for j in jobs]}, "")
        return EXIT_OK
    print(f"{'JOB ID':<40} {'STATUS':<12} {'CREATED':<21} EXECUTIONS")
    for j in jobs:
        print(f"{j.job_id:<40} {j.status:<12} {_when(j.created_at):<21} {_counts(j)}")
    return EXIT_OK


def cmd_describe(args: argparse.Namespace) -> int:
    with _store(args) as store:
        job = store.describe(args.job_id)
        now = store.clock()
    if args.json:
        _emit(args, job.as_dict(now), "")
        return EXIT_OK
    print(
        f"job {job.job_id}: {job.status}, created {_when(job.created_at)}"
        + (f", step timeout {job.step_timeout_minutes} min" if job.step_timeout_minutes else "")
    )
    print(f"document: {job.document}")
    print(f"{'THING':<32} {'STATUS':<12} {'VER':>4} {'UPDATED':<21} DETAILS")
    for e in job.executions:
        details = json.dumps(e.status_details, separators=(",", ":")) if e.status_details else ""
        print(
            f"{e.thing_name:<32} {e.status:<12} {e.version_number:>4} "
            f"{_when(e.last_updated_at):<21} {details}"
        )
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with _store(args) as store:
        job = store.cancel_job(args.job_id, force=args.force)
        now = store.clock()
    left = [e.thing_name for e in job.executions if e.status == m.IN_PROGRESS]
    text = f"canceled job {job.job_id} ({_counts(job)})"
    if left:
        text += f"; still IN_PROGRESS on {', '.join(left)} (--force cancels those too)"
    _emit(args, job.as_dict(now, executions=False), text)
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", help=f"job store and files (default {default_state_dir()})")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_commands(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the local jobs service and file server (until SIGTERM)")
    _common(s)
    s.add_argument("--broker", required=True, help="MQTT broker HOST:PORT")
    s.add_argument(
        "--http-port",
        type=int_between(0, 65535),
        default=DEFAULT_HTTP_PORT,
        help=f"file server port (default {DEFAULT_HTTP_PORT}; 0: any free port)",
    )
    s.add_argument("--ca", help="CA certificate of the broker (enables TLS)")
    s.add_argument("--cert", help="client certificate for the broker (mutual TLS)")
    s.add_argument("--key", help="client key for the broker (mutual TLS)")
    s.add_argument(
        "--url-expires",
        type=int_at_least(1),
        default=3600,
        help="seconds a presigned file URL stays valid (default 3600)",
    )
    s.add_argument(
        "--poll-interval",
        type=seconds,
        default=1.0,
        help="seconds between store polls and step-timeout sweeps (default 1)",
    )
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("create", help="create a job for one or more things")
    _common(s)
    s.add_argument("--thing", action="append", required=True, help="target thing (repeatable)")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--document", help="job document file (a JSON object)")
    g.add_argument("--image", help="firmware image: served locally, our native document")
    s.add_argument("--version", dest="img_version", help="image version for --image: 1.2.3[+4]")
    s.add_argument("--job-id", help="job id (default: generated)")
    s.add_argument(
        "--http-port",
        type=int_between(1, 65535),
        help="file server port in the URL (default: serve's)",
    )
    s.add_argument(
        "--step-timeout",
        type=int,
        help="minutes an execution may stay IN_PROGRESS without a new step timer from the device",
    )
    s.set_defaults(fn=cmd_create)

    s = sub.add_parser("list", help="list the jobs")
    _common(s)
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("describe", help="show a job and its executions")
    _common(s)
    s.add_argument("job_id")
    s.set_defaults(fn=cmd_describe)

    s = sub.add_parser("cancel", help="cancel a job's QUEUED executions")
    _common(s)
    s.add_argument("job_id")
    s.add_argument("--force", action="store_true", help="cancel IN_PROGRESS executions too")
    s.set_defaults(fn=cmd_cancel)


def add_jobs_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``jobs serve|create|list|describe|cancel`` to a CLI's subparsers; each command
    sets ``fn(args) -> exit code``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "jobs", help="the local AWS IoT Jobs service (offline use)"
    )
    _add_commands(p.add_subparsers(dest="jobs_cmd", required=True, metavar="COMMAND"))
    return p


def main_jobs(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(
        prog="fota-bridge jobs",
        description="The local AWS IoT Jobs service and its job store. Exit codes: 0 ok, 2 error.",
    )
    _add_commands(p.add_subparsers(dest="jobs_cmd", required=True, metavar="COMMAND"))
    args = p.parse_args(argv)
    return run("fota-bridge jobs", lambda: int(args.fn(args)))


if __name__ == "__main__":
    sys.exit(main_jobs())
