"""The largest image a slot holds: one limit, MCUboot's, in every part that checks it.

For every board layout in each MCUboot mode its slots allow, an image of exactly the limit
is accepted, and one byte more refused with a message a person can act on, by: the receiver
(image upload), direct mode (``mcu.fota``), the bridge's CLI (``sign``, ``upload``), the
bridge's daemon (a job), and the bootloader model itself.

Oracles: the limit is computed below from MCUboot's text (``boot_trailer_sz`` in
bootutil_area.c, ``app_max_size`` in swap_move.c, ``bootutil_max_image_size`` in
bootutil_misc.c with ``boot_swap_info_off`` from bootutil_misc.h), independently of
``mcu.mcuboot.max_image_size``; imgtool's ``--pad`` trailer check is a second oracle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
from smp.image_management import IMG_MGMT_ERR as ERR
from smpclient.requests.image_management import ImageUploadWrite

from bootloader.formats.layout import (
    BOARDS_DIR,
    MODES,
    Layout,
    LayoutError,
    board_names,
    load_board,
)
from bootloader.formats.layout import validate as validate_layout
from bootloader.sim.flash import Flash
from bootloader.sim.model.boot import boot
from bootloader.sim.testimages import payload, sign
from fota_common.cli import EXIT_ERROR, EXIT_OK
from host_bridge import cli, commands
from host_bridge.config import BridgeConfig, DeviceConfig
from host_bridge.daemon import Bridge
from host_bridge.image.download import DownloadError
from host_bridge.jobs.client import BrokerConfig
from host_bridge.jobs.documents import parse_document
from host_bridge.store import InFlight
from mcu import fota
from mcu import mcuboot as mb
from mcu import smp_frame as sf
from mcu.receiver import make_server

MAGIC_SZ: Final = 16
HASH_TLVS: Final = 4 + 4 + 32  # TLV info header + SHA-256 TLV: a hash-only image
CHUNK: Final = 32 * 1024


def upstream_max_image_size(lay: Layout) -> int:
    """MCUboot's limit, from its source text, for uniform sectors."""
    ma = lay.max_align
    magic_align = (MAGIC_SZ + ma - 1) // ma * ma  # BOOT_MAGIC_ALIGN_SIZE
    if lay.mode == "overwrite-only":
        # bootutil_max_image_size (MCUBOOT_OVERWRITE_ONLY): boot_swap_info_off(fap), for the
        # secondary (validated before the copy) and the primary (validated after it).
        def swap_info_off(size: int) -> int:
            magic_off = size - MAGIC_SZ  # boot_magic_off
            image_ok_off = (magic_off - ma) // ma * ma  # ALIGN_DOWN(magic_off - MAX_ALIGN)
            copy_done_off = image_ok_off - ma
            return copy_done_off - ma

        return min(swap_info_off(lay.slot0.size), swap_info_off(lay.slot1.size))
    # boot_trailer_sz: BOOT_STATUS_MAX_ENTRIES (MCUBOOT_MAX_IMG_SECTORS) x
    # BOOT_STATUS_STATE_COUNT (1 move + 2 swap states) x write size, + 4 x BOOT_MAX_ALIGN
    # (swap_type, copy_done, image_ok, swap_size) + the aligned magic.
    trailer = lay.max_sectors * (1 + 2) * lay.write_size + 4 * ma + magic_align
    ss = lay.sector_size
    trailer = (trailer + ss - 1) // ss * ss  # "The trailer size needs to be sector-aligned"
    pri = lay.slot0.size // ss * ss - trailer - ss  # less the padding sector of the move
    sec = lay.slot1.size // ss * ss - trailer
    return min(pri, sec)


def variants() -> list[tuple[str, str]]:
    out = []
    for board in board_names():
        for mode in MODES:
            try:
                validate_layout(dataclasses.replace(load_board(board), mode=mode))
            except LayoutError:
                continue
            out.append((board, mode))
    return out


VARIANTS: Final = variants()
IDS: Final = [f"{b}-{m}" for b, m in VARIANTS]


@dataclasses.dataclass
class Case:
    layout: Layout
    toml: Path  # the board's layout file, in this mode
    limit: int  # from upstream_max_image_size
    v1: bytes  # the running image
    at_limit: bytes  # v2, exactly `limit` bytes
    over: bytes  # v2, limit + 1 bytes


def image_of(total: int, version: str, lay: Layout, seed: str) -> bytes:
    img = sign(payload(total - lay.header_size - HASH_TLVS, seed), version, lay)
    assert len(img) == total
    return img


_CASES: dict[tuple[str, str], Case] = {}


@pytest.fixture(scope="module")
def layout_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("layouts")


@pytest.fixture
def case(request: pytest.FixtureRequest, layout_dir: Path) -> Case:
    board, mode = request.param
    if (board, mode) not in _CASES:
        text = (BOARDS_DIR / f"{board}.toml").read_text()
        text, n = re.subn(r'(?m)^mode = "[^"]*"$', f'mode = "{mode}"', text)
        assert n == 1
        toml = layout_dir / f"{board}-{mode}.toml"
        toml.write_text(text)
        lay = load_board(toml)
        limit = upstream_max_image_size(lay)
        _CASES[(board, mode)] = Case(
            lay,
            toml,
            limit,
            image_of(lay.header_size + 3 * lay.sector_size // 2, "1.0.0", lay, "v1"),
            image_of(limit, "2.0.0", lay, f"{board}-{mode}"),
            image_of(limit + 1, "2.0.0", lay, f"{board}-{mode}+1"),
        )
    return _CASES[(board, mode)]


def by_case() -> Any:
    return pytest.mark.parametrize("case", VARIANTS, ids=IDS, indirect=True)


def new_flash(c: Case) -> Flash:
    f = Flash.for_layout(c.layout)
    write_image(f, c.layout.slot0, c.v1, c.layout)
    return f


def write_image(f: Flash, part: Any, img: bytes, lay: Layout) -> None:
    f.area(part).write(0, img + bytes([lay.erased_val]) * (-len(img) % lay.write_size))


def boots(f: Flash, c: Case, version: str) -> None:
    r = boot(f, c.layout)
    assert r.booted is not None and r.booted.version == version, r.log


# -- the layouts ---------------------------------------------------------------------------


@by_case()
def test_the_layout_limit_is_mcuboots(case: Case) -> None:
    assert case.layout.max_image_size() == case.limit


@by_case()
def test_imgtool_pads_an_image_at_the_limit_into_the_slot(case: Case, tmp_path: Path) -> None:
    """imgtool sign --pad refuses an image whose trailer would not fit; at our limit it fits.

    For swap-using-move imgtool's trailer (--max-sectors, --align, --max-align) is
    boot_trailer_sz byte for byte: the largest image it pads is slot - trailer, and ours is
    that less MCUboot's sector rounding.  (Its --overwrite-only trailer is image_ok, copy_done
    and magic only, 8 bytes smaller than MCUboot's reservation, so it pads a little more.)
    """
    lay = case.layout
    args = [sys.executable, "-m", "imgtool.main", "sign", "--pad-header", "--pad"]
    args += ["--version", "2.0.0", *lay.imgtool_args()]

    def pad(total: int) -> subprocess.CompletedProcess[str]:
        src = tmp_path / "in.bin"
        src.write_bytes(payload(total - lay.header_size - HASH_TLVS, "pad"))
        return subprocess.run(
            [*args, str(src), str(tmp_path / "out.bin")],
            capture_output=True,
            text=True,
            check=False,
        )

    assert pad(case.limit).returncode == 0
    assert (tmp_path / "out.bin").stat().st_size == lay.slot1.size
    if lay.mode == "swap-move":
        trailer = lay.max_sectors * 3 * lay.write_size + 4 * lay.max_align + 16
        assert pad(lay.slot1.size - trailer).returncode == 0
        refused = pad(lay.slot1.size - trailer + 1)
        assert refused.returncode != 0 and "exceeds requested size" in refused.stderr
        assert case.limit <= lay.slot1.size - trailer


# -- the receiver --------------------------------------------------------------------------


class Receiver:
    def __init__(self, c: Case, flash: Flash) -> None:
        lay = c.layout
        self.server = make_server(
            flash.area(lay.slot0),
            flash.area(lay.slot1),
            lambda: None,
            lay.max_align,
            lay.trailer_size(),
            lay.mode,
            buf_size=CHUNK + 1024,
        )

    def call(self, packet: bytes) -> dict[str, Any]:
        reply = self.server.handle(packet)
        assert reply is not None
        body = cbor2.loads(reply[sf.HEADER_SIZE :])
        assert isinstance(body, dict)
        return body

    def slot_info(self) -> dict[str, Any]:
        return self.call(sf.pack_header(sf.OP_READ, 1, 0, 1, 1, 0, 6) + b"\xa0")

    def upload(self, img: bytes, length: int | None = None) -> dict[str, Any]:
        """Upload ``img``; the last reply, or the first error."""
        size = len(img) if length is None else length
        sha = hashlib.sha256(img).digest()
        rsp = self.call(ImageUploadWrite(off=0, data=img[:CHUNK], len=size, sha=sha).BYTES)
        while "err" not in rsp and rsp["off"] < len(img):
            off = rsp["off"]
            rsp = self.call(ImageUploadWrite(off=off, data=img[off : off + CHUNK]).BYTES)
        return rsp


@by_case()
def test_the_receiver_takes_the_largest_image_and_refuses_one_byte_more(case: Case) -> None:
    f = new_flash(case)
    rx = Receiver(case, f)
    assert rx.slot_info()["images"][0]["max_image_size"] == case.limit
    refused = rx.upload(case.over)
    assert refused == {"err": {"group": 1, "rc": ERR.INVALID_IMAGE_TOO_LARGE}}
    done = rx.upload(case.at_limit)
    assert (done["off"], done.get("match")) == (case.limit, True)
    mb.set_pending(f.area(case.layout.slot1), False, 0, case.layout.max_align)
    boots(f, case, "2.0.0")


@pytest.mark.parametrize(
    "case",
    [v for v in VARIANTS if v[1] == "swap-move"],
    indirect=True,
    ids=[i for i in IDS if i.endswith("-swap-move")],
)
def test_the_bootloader_refuses_an_image_one_byte_over(case: Case) -> None:
    """bootutil_img_validate: an image whose TLVs end past the limit is not valid; the
    secondary is erased and the running image stays."""
    f = new_flash(case)
    write_image(f, case.layout.slot1, case.over, case.layout)
    mb.set_pending(f.area(case.layout.slot1), False, 0, case.layout.max_align)
    r = boot(f, case.layout)
    assert r.swap_type == "none"
    assert r.booted is not None and r.booted.version == "1.0.0"
    assert any(f"more than the {case.limit} bytes" in line for line in r.log), r.log
    sec = f.area(case.layout.slot1)
    assert sec.read(0, 64) == bytes([case.layout.erased_val]) * 64


# -- direct mode ---------------------------------------------------------------------------


class Response:
    def __init__(self, body: bytes) -> None:
        self.status_code = 200
        self.headers = {"content-length": str(len(body))}
        self._body = body

    def iter_content(self, chunk_size: int = 1) -> Any:
        for off in range(0, len(self._body), chunk_size):
            yield self._body[off : off + chunk_size]

    def close(self) -> None:
        pass


class Session:
    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}

    def get(self, url: str, stream: bool = False, timeout: float = 60) -> Response:
        return Response(self.routes[url])


def direct_setup(c: Case, f: Flash, session: Session) -> Any:
    lay = c.layout
    return fota.setup(
        f.area(lay.slot0),
        f.area(lay.slot1),
        requests_session=session,
        reset_fn=lambda: None,
        max_align=lay.max_align,
        trailer_size=lay.trailer_size(),
        mode=lay.mode,
        chunk_size=CHUNK,
        log=lambda msg: None,
    )


def doc(url: str, img: bytes, size: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {"operation": "fota", "url": url, "version": "2.0.0"}
    d["sha256"] = hashlib.sha256(img).hexdigest()
    if size:
        d["size"] = len(img)
    return d


@by_case()
def test_direct_mode_takes_the_largest_image_and_refuses_one_byte_more(case: Case) -> None:
    f = new_flash(case)
    session = Session()
    session.routes["https://fw.example/at.img"] = case.at_limit
    session.routes["https://fw.example/over.img"] = case.over
    cfg = direct_setup(case, f, session)
    assert cfg.max_image_size == case.limit
    over = doc("https://fw.example/over.img", case.over)
    assert fota.update(over) is False
    assert fota.last_reason == (
        f"the image ({case.limit + 1} bytes) does not fit: the slot holds at most "
        f"{case.limit} bytes"
    )
    assert fota.update(doc("https://fw.example/over.img", case.over, size=False)) is False
    assert fota.last_reason == f"image download: more than the {case.limit} bytes the slot holds"
    at = doc("https://fw.example/at.img", case.at_limit)
    assert fota.update(at) is True, fota.last_reason
    assert fota.test(at) is True, fota.last_reason
    boots(f, case, "2.0.0")


# -- the bridge ----------------------------------------------------------------------------


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's error: one line, ``fota-bridge: error: <what>``; returns <what>."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    prefix = "fota-bridge: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix) :]


@by_case()
def test_bridge_sign_and_upload_take_the_largest_image_and_refuse_one_byte_more(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    lay = case.layout
    raw = tmp_path / "app.bin"
    out = tmp_path / "app.img"
    raw.write_bytes(payload(case.limit - lay.header_size - HASH_TLVS, "bridge"))
    sign_args = ["sign", str(raw), str(out), "--version", "2.0.0", "--board", str(case.toml)]
    assert cli.main(sign_args) == EXIT_OK
    assert out.stat().st_size == case.limit
    raw.write_bytes(payload(case.limit + 1 - lay.header_size - HASH_TLVS, "bridge"))
    capsys.readouterr()
    assert cli.main(sign_args) == EXIT_ERROR
    assert one_line_error(capsys) == (
        f"signed image is {case.limit + 1} bytes but the slot holds at most {case.limit}"
    )

    at, over = tmp_path / "at.img", tmp_path / "over.img"
    at.write_bytes(case.at_limit)
    over.write_bytes(case.over)
    parser = cli.build_parser()

    def upload_args(path: Path) -> Any:
        return parser.parse_args(
            ["upload", "--port", "socket://127.0.0.1:9", "--board", str(case.toml), str(path)]
        )

    assert len(commands._image(upload_args(at), None).data) == case.limit
    # The refusal comes before any device is contacted (nothing listens on that port).
    code = cli.main(
        ["upload", "--port", "socket://127.0.0.1:9", "--board", str(case.toml), str(over)]
    )
    assert code == EXIT_ERROR
    assert one_line_error(capsys) == (
        f"{over}: image is {case.limit + 1} bytes but the slot holds at most {case.limit} bytes"
    )


@by_case()
def test_bridge_without_a_board_uses_the_receivers_limit(case: Case) -> None:

    rx = Receiver(case, new_flash(case))

    class Client:
        def slot_info(self) -> dict[str, Any]:
            return rx.slot_info()

    args = cli.build_parser().parse_args(["upload", "--port", "x", "image.img"])
    _, limit = commands._signing_params(args, Client())
    assert limit == case.limit


class DeviceReached(Exception):
    """The daemon went on to the device: the image passed every check before it."""


class Jobs:
    def __init__(self, broker: Any, things: list[str], on_next: Any) -> None:
        self.connected = threading.Event()
        self.updates: list[tuple[str, str, Any]] = []

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def update(
        self, thing: str, job_id: str, status: str, details: Any = None, *a: Any, **k: Any
    ) -> dict[str, Any]:
        self.updates.append((job_id, status, details))
        return {"executionState": {"status": status, "versionNumber": 2}}

    def describe(self, thing: str, job_id: str) -> None:
        return None


@by_case()
def test_the_daemon_takes_the_largest_image_and_refuses_one_byte_more(
    case: Case, tmp_path: Path
) -> None:

    def reached(device: DeviceConfig) -> Any:
        raise DeviceReached()

    cfg = BridgeConfig(
        broker=BrokerConfig("127.0.0.1", 1883),
        devices=[DeviceConfig("thing", "/dev/null", board=str(case.toml))],
        state_dir=tmp_path / "state",
    )
    bridge = Bridge(cfg, jobs_factory=Jobs, client_factory=reached)
    try:
        cache = cfg.state_dir / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        worker = bridge.workers["thing"]

        def run(img: bytes, with_size: bool) -> None:
            sha = hashlib.sha256(img).hexdigest()
            (cache / f"{sha}.bin").write_bytes(img)  # downloaded before: no network
            document = {"operation": "fota", "url": "https://fw.example/a.img", "sha256": sha}
            if with_size:
                document["size"] = len(img)
            job = parse_document(document, raw_length=100)
            worker.current, worker.version = "j1", 1
            worker.run_job("j1", job, InFlight("thing", "j1", 1, 1, "downloading"))

        message = f"the image is {case.limit + 1} bytes but the slot holds at most {case.limit}"
        for with_size in (True, False):
            with pytest.raises(DownloadError) as info:
                run(case.over, with_size)
            assert str(info.value) == message + " bytes"
        with pytest.raises(DeviceReached):
            run(case.at_limit, True)
    finally:
        bridge.store.close()
