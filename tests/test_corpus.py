"""The corpus of bad inputs: each file through its parser, refused with the expected reason.

``corpus/manifest.json`` lists every file with the parser it is meant for, a substring of the
refusal and a note on how the file was made. A refusal is the module's own error (ImageError,
CborError, DocumentError, LayoutError, ConfigError) or its rejection value (a Verification
that is not ok, an SMP error reply, a Jobs ``/rejected`` reply, a frame decoder returning no
packet); any other exception fails the test.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from mpy import run_micropython

from bootloader.formats import image as bimg
from bootloader.formats import keys as bkeys
from bootloader.formats import verify as bverify
from bootloader.formats.layout import LayoutError, load_layout
from host_bridge.config import ConfigError, load_config
from host_bridge.jobs.documents import DocumentError, parse_document_text
from localjobs.api import JobsApi
from localjobs.store import JobStore
from mcu import cbor, fota_doc
from mcu import smp_frame as sf
from mcu.flash_area import RamArea
from mcu.receiver import make_server

CORPUS: Final = Path(__file__).parent / "corpus"
MANIFEST: Final = json.loads((CORPUS / "manifest.json").read_text())
ENTRIES: Final = [e for e in MANIFEST if e["parser"] != "key"]
JOBS_TOPIC: Final = "$aws/things/dev-1/jobs/j1/update"

Runner = Callable[[Path, dict[str, Any]], str]


def _image(path: Path, entry: dict[str, Any]) -> str:
    try:
        img = bimg.parse_image(path.read_bytes())
    except bimg.ImageError as exc:
        return str(exc)
    raise AssertionError(f"parse_image accepted it: {bimg.describe(img)}")


def _verify(path: Path, entry: dict[str, Any]) -> str:
    keys = [bkeys.load_public_key((CORPUS / k).read_bytes()) for k in entry.get("keys", [])]
    try:
        result = bverify.verify_image(path.read_bytes(), keys)
    except bimg.ImageError as exc:
        return str(exc)
    assert not result.ok, result
    return result.reason


def _cbor(path: Path, entry: dict[str, Any]) -> str:
    try:
        value = cbor.decode(path.read_bytes())
    except cbor.CborError as exc:
        return str(exc)
    raise AssertionError(f"decoded as {value!r}")


def _smp_server(path: Path, entry: dict[str, Any]) -> str:
    primary, secondary = RamArea(0x1400, 0x200, 8), RamArea(0x1200, 0x200, 8)
    server = make_server(primary, secondary, lambda: None, 8, 432, "swap-move", 2048, 4)
    reply = server.handle(path.read_bytes())
    assert reply is not None
    body = cbor.decode(reply, sf.HEADER_SIZE)
    assert isinstance(body, dict) and (body.get("rc") or "err" in body), body
    assert secondary.read(0, secondary.size) == b"\xff" * secondary.size  # nothing written
    return repr(body.get("err", body))


def _console(path: Path, entry: dict[str, Any]) -> str:
    packets = sf.ConsoleDecoder(2048 - 4).feed(path.read_bytes())
    assert packets == [], packets
    return "no packet"


def _job_document(path: Path, entry: dict[str, Any]) -> str:
    try:
        job = parse_document_text(path.read_bytes())
    except DocumentError as exc:
        return exc.reason
    raise AssertionError(f"accepted as {job!r}")


def _mcu_job_document(path: Path, entry: dict[str, Any]) -> str:
    try:
        spec = fota_doc.parse(path.read_text())
    except fota_doc.DocumentError as exc:
        return str(exc)
    raise AssertionError(f"accepted as {spec!r}")


def _layout(path: Path, entry: dict[str, Any]) -> str:
    try:
        layout = load_layout(path)
    except LayoutError as exc:
        return str(exc)
    raise AssertionError(f"accepted as {layout!r}")


def _config(path: Path, entry: dict[str, Any]) -> str:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return str(exc)
    raise AssertionError(f"accepted as {cfg!r}")


@pytest.fixture(scope="module")
def jobs_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobsApi]:
    store = JobStore(tmp_path_factory.mktemp("jobs") / "jobs.sqlite3")
    store.create_job("j1", ["dev-1"], json.dumps({"operation": "reboot"}))
    yield JobsApi(store)
    store.close()


RUNNERS: Final[dict[str, Runner]] = {
    "image": _image,
    "image-verify": _verify,
    "cbor": _cbor,
    "smp-server": _smp_server,
    "console": _console,
    "job-document": _job_document,
    "mcu-job-document": _mcu_job_document,
    "layout": _layout,
    "config": _config,
}


def test_manifest_names_every_file_once_per_parser() -> None:
    files = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file()}
    listed = {e["file"] for e in MANIFEST}
    assert files - {"manifest.json"} == listed
    pairs = [(e["file"], e["parser"]) for e in MANIFEST]
    assert len(pairs) == len(set(pairs))
    assert {e["parser"] for e in ENTRIES} <= {*RUNNERS, "jobs-request"}


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{e['parser']}:{e['file']}" for e in ENTRIES])
def test_corpus_file_is_refused(
    entry: dict[str, Any], jobs_api: JobsApi, caplog: pytest.LogCaptureFixture
) -> None:
    path = CORPUS / entry["file"]
    if entry["parser"] == "jobs-request":
        with caplog.at_level(logging.ERROR):
            reply = jobs_api.handle(JOBS_TOPIC, path.read_bytes())
        assert reply is not None and reply.topic == f"{JOBS_TOPIC}/rejected", reply
        outcome = f"{reply.payload['code']}: {reply.payload['message']}"
        assert not caplog.records  # a rejection, not an internal error
    else:
        outcome = RUNNERS[entry["parser"]](path, entry)
    assert entry["error"] in outcome, f"{entry['note']}: {outcome}"


# The same files through the MCU's parsers under MicroPython itself (where recursion, memory
# and the json module differ from CPython's).
MCU_GUEST: Final = """
from mcu import cbor, fota_doc
from mcu import smp_frame as sf
for name, parser, data in CASES:
    try:
        if parser == "cbor":
            cbor.decode(data)
            outcome = "accepted"
        elif parser == "console":
            packets = sf.ConsoleDecoder(2048 - 4).feed(data)
            outcome = "no packet" if not packets else "accepted"
        else:
            fota_doc.parse(str(data, "utf-8"))
            outcome = "accepted"
    except (cbor.CborError, fota_doc.DocumentError) as exc:
        outcome = str(exc)
    except Exception as exc:
        outcome = "crash: %s %s" % (type(exc).__name__, exc)
    print(repr((name, parser, outcome)))
"""


def test_mcu_parsers_refuse_the_corpus_under_micropython() -> None:
    entries = [e for e in ENTRIES if e["parser"] in ("cbor", "console", "mcu-job-document")]
    cases = [(e["file"], e["parser"], (CORPUS / e["file"]).read_bytes()) for e in entries]
    out, _fuel = run_micropython(f"CASES = {cases!r}\n{MCU_GUEST}", fuel=2_000_000_000)
    rows = map(ast.literal_eval, out.splitlines())
    outcomes = {(name, parser): outcome for name, parser, outcome in rows}
    for e in entries:
        outcome = outcomes[(e["file"], e["parser"])]
        assert e["error"] in outcome, f"{e['file']} under MicroPython: {outcome}"
