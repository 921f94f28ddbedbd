"""Security properties of the bridge, each checked against the real thing where it can be.

(a) the broker takes only clients with a certificate from its CA (mosquitto, mutual TLS);
(b) plaintext MQTT only when the config says so; (c) plain HTTP downloads only with allow_http;
(d) an image not signed by a trusted key never reaches the device; (e) a presigned URL's query
string never reaches a log record, an error or statusDetails; (f) keys and state are private
(0600 files, 0700 directories) even under umask 000; (g) the daemon runs as a normal user.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
import pytest
from https_server import HttpsServer, Pki, Route, make_pki
from paho.mqtt.enums import CallbackAPIVersion

from bootloader.formats.layout import Layout
from bootloader.sim.flash import Flash
from bootloader.sim.testimages import keygen, payload, sign
from fota_common.errors import DownloadError, ImageError
from harness.mosquitto import HOST, Mosquitto, TestPki
from host_bridge import cli
from host_bridge.config import BridgeConfig, ConfigError, DeviceConfig, parse_config
from host_bridge.daemon import Bridge
from host_bridge.image.download import Downloader
from host_bridge.image.prepare import load_trusted_keys, prepare
from host_bridge.jobs.client import BrokerConfig
from host_bridge.jobs.documents import DocumentError, FirmwareJob, parse_document
from host_bridge.smp.client import SmpClient
from host_bridge.store import InFlight, Store
from localjobs import pki as local_pki
from localjobs.store import JobStore

pytestmark = pytest.mark.timeout(120)

REPO: Final = Path(__file__).resolve().parent.parent
SIGNATURE: Final = "d2hhdC1hLXNpZ25hdHVyZS1sb29rcy1saWtl"
QUERY: Final = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20300101%2Fs3"
    f"&X-Amz-Date=20300101T000000Z&X-Amz-Expires=3600&X-Amz-Signature={SIGNATURE}"
)
THING: Final = "sensor-1"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


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


# -- (c) plain HTTP downloads only with allow_http ------------------------------------------------


class RecordingOpener:
    """An Opener that serves ``body`` (or redirects) and records every URL asked for."""

    def __init__(self, body: bytes = b"", redirect: str | None = None) -> None:
        self.body = body
        self.redirect = redirect
        self.urls: list[str] = []

    def __call__(self, url: str, headers: Mapping[str, str]) -> Any:
        self.urls.append(url)
        if self.redirect is not None and len(self.urls) == 1:
            return FakeResponse(302, b"", {"Location": self.redirect})
        return FakeResponse(200, self.body, {"Content-Length": str(len(self.body))})


class FakeResponse:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.reason, self._body, self._headers = status, "OK", body, headers

    def getheader(self, name: str) -> str | None:
        return self._headers.get(name)

    def read(self, amt: int) -> bytes:
        piece, self._body = self._body[:amt], self._body[amt:]
        return piece

    def close(self) -> None:
        pass


def job_for(url: str, data: bytes) -> FirmwareJob:
    return FirmwareJob(
        url=url, source="native", size=len(data), sha256=hashlib.sha256(data).digest()
    )


def test_http_job_documents_need_allow_http() -> None:
    doc = {"url": "http://h.example/fw.bin", "sha256": "ab" * 32}
    with pytest.raises(DocumentError, match=r"must be https:// \(plain http is allowed only"):
        parse_document(doc)
    job = parse_document(doc, allow_http=True)
    assert isinstance(job, FirmwareJob) and job.url == doc["url"]


def test_http_downloads_need_allow_http(tmp_path: Path) -> None:
    data = b"firmware" * 100
    job = job_for("http://h.example/fw.bin", data)
    opener = RecordingOpener(data)
    with pytest.raises(DownloadError, match=r"must be https://"):
        Downloader(opener=opener).fetch(job, tmp_path / "fw.bin")
    assert opener.urls == []  # refused before any request
    Downloader(opener=opener, allow_http=True).fetch(job, tmp_path / "fw.bin")
    assert opener.urls == [job.url]


def test_a_redirect_to_http_is_refused(tmp_path: Path) -> None:
    data = b"firmware" * 100
    opener = RecordingOpener(data, redirect="http://h.example/fw.bin")
    with pytest.raises(DownloadError, match=r"redirect target must be https://"):
        Downloader(opener=opener).fetch(job_for("https://h.example/fw.bin", data), tmp_path / "f")
    assert opener.urls == ["https://h.example/fw.bin"]


# -- (d) and (e): the daemon's job handling, against a fake Jobs service and a fake link ----------


class FakeJobs:
    """The Jobs client the daemon talks to: records updates, answers describe."""

    def __init__(self, broker: BrokerConfig, things: list[str], on_next: Any) -> None:
        self.connected = threading.Event()
        self.connected.set()
        self.updates: list[tuple[str, dict[str, str]]] = []
        self.document: dict[str, Any] | None = None

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def update(
        self,
        thing: str,
        job_id: str,
        status: str,
        details: Any = None,
        expected_version: Any = None,
        step_timeout_min: Any = None,
        **kw: Any,
    ) -> dict[str, Any]:
        self.updates.append((status, dict(details or {})))
        return {"executionState": {"status": status, "versionNumber": len(self.updates) + 1}}

    def describe(self, thing: str, job_id: str) -> dict[str, Any] | None:
        return {"status": "IN_PROGRESS", "versionNumber": 1, "jobDocument": self.document}


class RecordingLink:
    """A link that must stay silent: every packet sent is recorded."""

    url, framing, baudrate = "fake://device", "console", 115200

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, packet: bytes) -> None:
        self.sent.append(packet)

    def recv(self, timeout_s: float) -> bytes | None:
        return None

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def reopen(self) -> None:
        pass


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory, tiny: Layout) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("signing")
    trusted, other = keygen(d / "trusted.pem"), keygen(d / "other.pem")
    body = payload(1500, "security")
    return {
        "trusted": trusted,
        "good": sign(body, "1.1.0", tiny, trusted),
        "untrusted": sign(body, "1.1.0", tiny, other),
    }


@pytest.fixture(scope="module")
def web_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("web-pki"))


@contextlib.contextmanager
def daemon_rig(
    state: Path, signing: dict[str, Any], web_pki: Pki
) -> Iterator[tuple[Bridge, list[RecordingLink]]]:
    cfg = BridgeConfig(
        broker=BrokerConfig("127.0.0.1", 1883),
        devices=[DeviceConfig(THING, "/dev/null", board="tiny")],
        state_dir=state,
        trusted_keys=[signing["trusted"]],
        download_ca=web_pki.ca_cert,
        progress_interval_s=0.0,
    )
    links: list[RecordingLink] = []

    def client_for(device: DeviceConfig) -> Any:

        links.append(RecordingLink())
        return SmpClient(links[-1], timeout_s=0.05, retries=0)  # type: ignore[arg-type]

    bridge = Bridge(cfg, jobs_factory=FakeJobs, client_factory=client_for)
    try:
        yield bridge, links
    finally:
        bridge.store.close()


def run_job(bridge: Bridge, document: dict[str, Any], job_id: str = "job-1") -> FakeJobs:
    jobs: FakeJobs = bridge.jobs  # type: ignore[assignment]
    jobs.document = document
    bridge.workers[THING].handle(
        {
            "jobId": job_id,
            "status": "QUEUED",
            "versionNumber": 1,
            "executionNumber": 1,
            "jobDocument": document,
        }
    )
    return jobs


def test_prepare_refuses_an_image_signed_by_an_untrusted_key(signing: dict[str, Any]) -> None:
    keys = load_trusted_keys([signing["trusted"]])
    with pytest.raises(ImageError, match=r"refused before upload: signed by an unknown key"):
        prepare(signing["untrusted"], trusted_keys=keys)
    assert prepare(signing["good"], trusted_keys=keys).version == "1.1.0"


def test_the_daemon_never_sends_an_untrusted_image(
    tmp_path: Path, signing: dict[str, Any], web_pki: Pki
) -> None:
    with (
        HttpsServer(web_pki) as server,
        daemon_rig(tmp_path / "state", signing, web_pki) as (
            bridge,
            links,
        ),
    ):
        image = signing["untrusted"]
        server.routes["/fw.bin"] = Route(body=image)
        doc = {"url": server.url("/fw.bin"), "sha256": hashlib.sha256(image).hexdigest()}
        jobs = run_job(bridge, doc)
        status, details = jobs.updates[-1]
        assert status == "FAILED" and "signed by an unknown key" in details["reason"]
        assert all(link.sent == [] for link in links)  # not a byte reached the device
        # The control: the trusted image does go to the device (which never answers here).
        image = signing["good"]
        server.routes["/fw.bin"] = Route(body=image)
        doc = {"url": server.url("/fw.bin"), "sha256": hashlib.sha256(image).hexdigest()}
        jobs = run_job(bridge, doc, "job-2")
        assert jobs.updates[-1][0] == "FAILED" and links and links[-1].sent


def assert_no_secret(texts: list[str]) -> None:
    for text in texts:
        assert "X-Amz-Signature" not in text and SIGNATURE not in text, text


def log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    fmt = logging.Formatter()
    out = []
    for record in caplog.records:
        out.append(record.getMessage())
        if record.exc_info:
            out.append(fmt.formatException(record.exc_info))
    return out


@pytest.mark.parametrize(
    "case", ["untrusted", "expired", "missing", "hash-mismatch", "http", "bad-host", "too-big"]
)
def test_presigned_urls_never_reach_logs_or_status_details(
    case: str,
    tmp_path: Path,
    signing: dict[str, Any],
    web_pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    image = signing["untrusted"]
    with (
        HttpsServer(web_pki) as server,
        daemon_rig(tmp_path / "state", signing, web_pki) as (
            bridge,
            _links,
        ),
    ):
        route = Route(body=image)
        server.routes["/fw.bin"] = route
        url, sha = server.url("/fw.bin", QUERY), hashlib.sha256(image).hexdigest()
        doc: dict[str, Any] = {"url": url, "sha256": sha}
        if case == "expired":
            route.expired_tokens.add(SIGNATURE)  # and every refreshed URL is the same one
        elif case == "missing":
            doc["url"] = server.url("/none.bin", QUERY)
        elif case == "hash-mismatch":
            doc["sha256"] = "00" * 32
        elif case == "http":
            doc["url"] = url.replace("https://", "http://")
        elif case == "bad-host":
            doc["url"] = url.replace("127.0.0.1", "user:pw@127.0.0.1")
        elif case == "too-big":
            doc["size"] = 1 << 20
        jobs = run_job(bridge, {"url": f"${{aws:iot:s3-presigned-url:{doc.pop('url')}}}", **doc})
        assert jobs.updates[-1][0] in ("FAILED", "REJECTED"), jobs.updates
        texts = [v for _s, d in jobs.updates for v in d.values()]
        texts += [reason for *_x, reason in bridge.store.history()]
        texts += log_texts(caplog)
        assert_no_secret(texts)
        if case not in ("http", "bad-host", "too-big"):
            assert any(s.query.endswith(SIGNATURE) for s in server.requests)  # it was used


def test_downloader_errors_and_logs_never_show_the_query(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"https://h.example/fw.bin?{QUERY}"
    data = b"x" * 1000

    class Failing(RecordingOpener):
        def __call__(self, u: str, headers: Mapping[str, str]) -> Any:
            self.urls.append(u)
            if len(self.urls) == 1:
                return FakeResponse(302, b"", {"Location": f"/moved.bin?{QUERY}"})
            raise OSError(f"connection to {u} reset")  # a transport error quoting the URL

    sleeps: list[float] = []
    with pytest.raises(DownloadError) as caught:
        Downloader(opener=Failing(), sleep=sleeps.append, retries=2).fetch(
            job_for(url, data), tmp_path / "fw.bin"
        )
    assert len(sleeps) == 2  # retried, each retry logged
    assert_no_secret([caught.value.reason, str(caught.value), *log_texts(caplog)])


# -- (f) private files and directories ------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 000: a file or directory is private only if the code asks for it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_signing_keys_are_written_0600(tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    assert cli.main(["keys", "new", str(key)]) == 0
    assert mode_of(key) == 0o600
    issued = local_pki.make_ca("test")
    issued.write(tmp_path / "ca.pem", tmp_path / "ca.key")
    assert mode_of(tmp_path / "ca.key") == 0o600


@pytest.mark.usefixtures("open_umask")
def test_the_bridge_store_is_private(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "bridge.sqlite")
    try:
        store.save(InFlight(THING, "j1", 1, 1, "downloading"))
        store.finish(THING, "j1", "SUCCEEDED")
        assert mode_of(tmp_path / "state") == 0o700
        files = sorted((tmp_path / "state").iterdir())
        assert {p.name for p in files} >= {"bridge.sqlite", "bridge.sqlite-wal"}
        assert all(mode_of(p) == 0o600 for p in files), {p.name: oct(mode_of(p)) for p in files}
    finally:
        store.close()


@pytest.mark.usefixtures("open_umask")
def test_the_local_jobs_store_is_private(tmp_path: Path) -> None:
    with JobStore(tmp_path / "jobs" / "jobs.sqlite3") as store:
        store.create_job("j1", [THING], json.dumps({"operation": "reboot"}))
        files = sorted((tmp_path / "jobs").iterdir())
        assert mode_of(tmp_path / "jobs") == 0o700
        assert all(mode_of(p) == 0o600 for p in files), {p.name: oct(mode_of(p)) for p in files}


@pytest.mark.usefixtures("open_umask")
def test_downloads_and_the_cache_are_private(
    tmp_path: Path, signing: dict[str, Any], web_pki: Pki
) -> None:
    state = tmp_path / "state"
    with HttpsServer(web_pki) as server, daemon_rig(state, signing, web_pki) as (bridge, _l):
        image = signing["untrusted"]  # downloaded and cached, then refused
        server.routes["/fw.bin"] = Route(body=image)
        run_job(bridge, {"url": server.url("/fw.bin"), "sha256": hashlib.sha256(image).hexdigest()})
    assert mode_of(state) == 0o700
    for directory in (state / "downloads", state / "cache"):
        assert mode_of(directory) == 0o700
        files = list(directory.iterdir())
        assert files and all(mode_of(p) == 0o600 for p in files)
    assert all(mode_of(p) == 0o600 for p in state.glob("bridge.sqlite*"))


@pytest.mark.usefixtures("open_umask")
def test_virtual_mcu_flash_files_are_0600(tmp_path: Path, tiny: Layout) -> None:
    path = tmp_path / "flash.bin"
    with Flash.for_layout(tiny, path):  # what fota-vmcu --flash and fota-boot --flash open
        pass
    assert mode_of(path) == 0o600


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
