"""Campaign: infrastructure faults around one device.

(a) mosquitto is stopped mid-job and started again a second later (the bridge and the
local jobs service both reconnect); the job must end SUCCEEDED, the image test-booted once.
(b) the HTTPS connection to the file server drops part-way through the image, many times
(a TCP proxy cuts it): the download resumes with Range requests and the image is intact.
(c) the presigned URL expires mid-download: the file server answers the resumed request
"403 Request has expired" (or the bridge sees the expiry time has passed), the bridge asks
for a fresh URL and resumes.  (b) and (c) run the bridge's Downloader against the local
jobs service's own HTTPS file server, in-process.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bootloader.formats.layout import load_board
from bootloader.sim.testimages import payload
from fota_common.errors import BridgeError
from harness.procs import Procs
from host_bridge.image.download import Downloader
from host_bridge.jobs.documents import FirmwareJob, parse_document
from localjobs.fileserver import FileServer
from reliability.common import (
    CampaignResult,
    Deadline,
    Figure,
    check_flash_file,
    command_line,
    make_images,
)
from reliability.cutproxy import CutProxy
from reliability.stack import Stack, processes

BOARD: Final = "nrf52840"
VERSIONS: Final = ("1.1.0", "1.2.0", "1.3.0")
STACK_BAUD: Final = 921600
BROKER_DOWN_S: Final = 1.0
JOB_TIMEOUT_S: Final = 120.0


# -- (a) the broker restarted mid-job ----------------------------------------------------------
@dataclass
class BrokerRestart:
    job: str
    phase: str
    status: str
    reason: str
    test_boots: int
    running_ok: bool
    seconds: float


def _broker_restarts(work: Path, restarts: int, deadline: Deadline) -> list[BrokerRestart]:
    layout = load_board(BOARD)
    images = make_images(work, BOARD, 128 * 1024, VERSIONS)
    out: list[BrokerRestart] = []
    # Where in the job the broker goes away: during the upload (progress reports are
    # being sent), and right as the job is created (before the bridge has heard of it).
    when = ["uploading", "created"]
    with Procs(work / "logs") as procs:
        stack = Stack(work, procs, images, BOARD, STACK_BAUD, images.images[VERSIONS[0]])
        try:
            stack.up()
            assert stack.vmcu is not None and stack.mosquitto is not None
            current = VERSIONS[0]
            for i in range(restarts):
                if deadline.passed:
                    break
                target = images.images[VERSIONS[(VERSIONS.index(current) + 1) % len(VERSIONS)]]
                job_id = f"broker-{i + 1}"
                point = when[i % len(when)]
                mark = stack.vmcu.mark()
                t0 = time.monotonic()
                stack.create_job(job_id, target)
                if point == "uploading":
                    state = stack.wait_phase(job_id, ("uploading",), 60)
                    phase = state.details.get("phase", state.status)
                else:
                    phase = "just created"
                stack.mosquitto.stop()
                time.sleep(BROKER_DOWN_S)
                stack.start_broker()
                state = stack.wait_job(job_id, JOB_TIMEOUT_S)
                after = check_flash_file(stack.flash, layout, images.pub)
                now = images.by_hash(after.tlv_hash or b"")
                out.append(
                    BrokerRestart(
                        job_id,
                        phase,
                        state.status,
                        state.details.get("reason", ""),
                        len(stack.test_boots(mark)),
                        bool(now and now.version == target.version and after.confirmed),
                        time.monotonic() - t0,
                    )
                )
                if now is not None:
                    current = now.version
        finally:
            stack.close()
    return out


# -- (b), (c) downloads --------------------------------------------------------------------------
@dataclass
class DownloadRun:
    label: str
    size: int
    ok: bool
    reason: str
    cuts: int
    resumes: int
    refreshes: int
    bytes_served: int


class _Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


def _job(url: str, data: bytes) -> FirmwareJob:
    doc = {
        "operation": "fota",
        "url": url,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "version": "1.0.0",
    }
    job = parse_document(doc)
    assert isinstance(job, FirmwareJob)
    return job


def _download(
    work: Path, label: str, data: bytes, cut_every: int | None, expire: str | None
) -> DownloadRun:
    """One download through a proxy that cuts connections; ``expire`` is None, "server"
    (the server's clock jumps past the URL's expiry at the first cut) or "bridge" (the
    bridge's clock does)."""
    state = work / "files-state"
    files_dir = state / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() else "-" for c in label).strip("-") + ".img"
    (files_dir / name).write_bytes(data)
    server_clock, bridge_clock = _Clock(), _Clock()
    expires_s = 60
    with FileServer(files_dir, state, clock=server_clock.now, url_expires_s=expires_s) as files:

        def cut_after(number: int) -> int | None:
            if cut_every is None:
                return 60_000 if number == 1 else None  # one cut, for the expiry cases
            return cut_every

        def on_cut(number: int) -> None:
            if number == 1 and expire == "server":
                server_clock.offset += 2 * expires_s
            if number == 1 and expire == "bridge":
                bridge_clock.offset += 2 * expires_s

        with CutProxy(files.port, cut_after, on_cut) as proxy:

            def url() -> str:
                return files.url_for(name).replace(f":{files.port}/", f":{proxy.port}/")

            dl = Downloader(
                ca_file=files.ca_path,
                retries=4,
                backoff_s=0.05,
                timeout_s=10.0,
                now=bridge_clock.now,
                max_refreshes=3,
            )

            def refresh() -> str:
                server_clock.offset = max(server_clock.offset, bridge_clock.offset)
                return url()

            try:
                result = dl.fetch(_job(url(), data), work / f"{name}.out", refresh_url=refresh)
                got = (work / f"{name}.out").read_bytes()
                ok = got == data and result.sha256 == hashlib.sha256(data).digest()
                run = DownloadRun(
                    label,
                    len(data),
                    ok,
                    "" if ok else "content differs",
                    proxy.cuts,
                    result.resumes,
                    result.refreshes,
                    proxy.bytes_down,
                )
            except BridgeError as exc:
                run = DownloadRun(
                    label, len(data), False, str(exc), proxy.cuts, 0, 0, proxy.bytes_down
                )
    return run


def run(work: Path, quick: bool = False) -> CampaignResult:
    t0 = time.monotonic()
    res = CampaignResult(
        "infra", "Infrastructure faults: broker restart, dropped and expired downloads"
    )
    cmd = command_line("reliability", ["--only", "infra"] + (["--quick"] if quick else []))
    restarts = _broker_restarts(work / "broker", 1 if quick else 4, Deadline(90 if quick else 300))
    for r in restarts:
        if r.status != "SUCCEEDED" or not r.running_ok:
            res.violate(f"broker restart ({r.phase}): job {r.job} ended {r.status}: {r.reason}")
        if r.test_boots != 1:
            res.violate(f"broker restart ({r.phase}): {r.test_boots} test boots for {r.job}")
    res.figures.append(
        Figure(
            f"(a) mosquitto stopped for {BROKER_DOWN_S:g} s mid-job, {len(restarts)} jobs",
            [
                "job",
                "broker restarted when",
                "job status",
                "image running, confirmed",
                "test boots",
                "job s",
            ],
            [
                [
                    r.job,
                    r.phase,
                    r.status,
                    "yes" if r.running_ok else "NO",
                    str(r.test_boots),
                    f"{r.seconds:.1f}",
                ]
                for r in restarts
            ],
            cmd,
            [
                f"Full local stack as in the crash campaign (fota-vmcu {BOARD} at {STACK_BAUD} "
                "baud, 128 KiB images); mosquitto gets SIGTERM and is started again on the same "
                "port; the bridge and the jobs service reconnect on their own."
            ],
            processes(BOARD, STACK_BAUD),
        )
    )
    rows = []
    runs: list[DownloadRun] = []
    big = 256 * 1024 if quick else 1024 * 1024
    n_drops = 1 if quick else 5
    for i in range(n_drops):
        data = payload(big, f"download-{i}")
        runs.append(_download(work / "dl", f"dropped {i + 1}", data, 48 * 1024 + 997 * i, None))
    data = payload(big, "expiring")
    runs.append(_download(work / "dl", "expired (server 403)", data, None, "server"))
    runs.append(_download(work / "dl", "expired (bridge clock)", data, None, "bridge"))
    for d in runs:
        rows.append(
            [
                d.label,
                str(d.size),
                "ok" if d.ok else f"FAILED: {d.reason}",
                str(d.cuts),
                str(d.resumes),
                str(d.refreshes),
                f"{d.bytes_served / d.size:.2f}x",
            ]
        )
        if not d.ok:
            res.violate(f"download {d.label}: {d.reason}")
        elif d.label.startswith("dropped") and d.resumes < d.cuts:
            res.violate(f"download {d.label}: {d.cuts} cuts but {d.resumes} Range resumes")
        elif d.label.startswith("expired") and d.refreshes != 1:
            res.violate(f"download {d.label}: {d.refreshes} URL refreshes (want 1)")
    res.figures.append(
        Figure(
            "(b) connection dropped mid-download, (c) presigned URL expired mid-download",
            [
                "download",
                "bytes",
                "result (SHA-256 checked)",
                "connections cut",
                "Range resumes",
                "URL refreshes",
                "bytes served / size",
            ],
            rows,
            cmd,
            [
                "host_bridge.image.Downloader against the local jobs service's HTTPS file server "
                "(localjobs.fileserver) through a TCP proxy on 127.0.0.1 that closes "
                "connections part-way: (b) every connection after 48 KiB (+ ~1 KiB per run); "
                "(c) the first connection after 60,000 bytes, while the server's (or the bridge's) "
                "clock jumps past the 60 s URL expiry.",
                "'bytes served / size' above 1.00x is bytes fetched twice: the Downloader "
                "reads the body in pieces, and the piece a drop cuts short is thrown away "
                "(http.client raises IncompleteRead; its partial bytes are not kept), so each "
                "drop costs up to one piece again.",
            ],
        )
    )
    res.data = {"broker": restarts, "downloads": runs}
    res.seconds = time.monotonic() - t0
    return res
