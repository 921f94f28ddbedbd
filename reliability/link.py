"""Campaign: updates through a faulty serial line.

    bridge (DeviceUpdater) <-> tools.faultlink <-> fota-vmcu (nrf52840, unthrottled)

N full device flows (upload, test mark, reset, the firmware confirms itself) of a 128 KiB
imgtool-signed image, alternating two versions so that every flow changes the running
image; slot 1 is erased first, so every flow sends the whole image.  The same N run again
on a clean line give the reference time.  Invariants: no exception escapes the flow (it
ends confirmed, reverted or failed), no image but the two signed ones ever boots (the
virtual MCU's boot log, and slot 0 read from the flash file and validated as
``fota-boot inspect`` does), and a flow that says "confirmed" left that image running
and confirmed.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bootloader.formats.layout import load_board
from fota_common.errors import BridgeError
from harness.procs import Procs, start_vmcu, vmcu_cmd
from host_bridge.device import DeviceUpdater, Outcome, UpdateOptions
from host_bridge.image.prepare import load_trusted_keys, prepare
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink
from reliability.common import (
    PY,
    CampaignResult,
    Deadline,
    Figure,
    ImageSet,
    check_flash_file,
    command_line,
    make_images,
)

log = logging.getLogger("reliability.link")

BOARD: Final = "nrf52840"
IMAGE_SIZE: Final = 128 * 1024
VERSIONS: Final = ("1.1.0", "1.2.0")
HOST_BAUD: Final = 921600  # the pty is unthrottled; this only sizes the upload's timeouts
FAULTS: Final = {
    "--corrupt": "0.001",
    "--drop": "0.0001",
    "--disconnect-every": "3",
    "--blackout-ms": "200",
    "--seed": "1",
}
OPTIONS: Final = UpdateOptions(confirm_timeout_s=20.0, boot_timeout_s=20.0)
ERASE_TRIES: Final = 5
DEVICES: Final = 5  # virtual MCUs served at once (N flows spread over them)
BOOT_RE: Final = re.compile(
    r"boot (\d+): swap type (\w+), running version (\S+) \((\w+)\) hash ([0-9a-f]+)"
)


@dataclass
class Transfer:
    index: int
    target: str
    status: str  # confirmed | reverted | failed | exception
    reason: str
    seconds: float
    sent_bytes: int = 0
    retries: int = 0
    resyncs: int = 0
    uploaded: bool = False
    running: str = ""  # version in slot 0 afterwards (from the flash file)
    confirmed: bool = False
    log: list[str] = field(default_factory=list)  # the flow's own account (Outcome.log)


@dataclass
class Series:
    label: str
    transfers: list[Transfer] = field(default_factory=list)
    seconds: float = 0.0
    corrupt_boots: list[str] = field(default_factory=list)
    invalid_slot0: list[str] = field(default_factory=list)
    false_confirms: list[str] = field(default_factory=list)
    test_boots: int = 0
    counters: dict[str, object] = field(default_factory=dict)
    stopped_early: bool = False

    def count(self, status: str) -> int:
        return sum(1 for t in self.transfers if t.status == status)

    @property
    def completed(self) -> int:
        return sum(
            1
            for t in self.transfers
            if t.status == "confirmed" and t.running == t.target and t.confirmed
        )


def _erase_slot1(port: str) -> bool:
    """Empty slot 1 so the next flow sends the whole image (bounded tries on a bad line)."""
    for _ in range(ERASE_TRIES):
        client = SmpClient(SerialLink(port, HOST_BAUD))
        try:
            client.erase(1)
            return True
        except BridgeError:
            continue
        finally:
            client.link.close()
    return False


def _series(
    work: Path, images: ImageSet, n: int, faulty: bool, devices: int, deadline: Deadline
) -> Series:
    """N flows spread over ``devices`` virtual MCUs (each behind its own faulty line, with
    its own seed), served at once, as one bridge serves several devices."""
    label = "faulty line" if faulty else "clean line"
    plan = [list(range(j, n, devices)) for j in range(devices)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(devices) as pool:
        parts = list(
            pool.map(
                lambda j: _device(work / f"device-{j + 1}", images, plan[j], faulty, j, deadline),
                range(devices),
            )
        )
    series = Series(label, seconds=time.monotonic() - t0)
    for part in parts:
        series.transfers += part.transfers
        series.corrupt_boots += part.corrupt_boots
        series.invalid_slot0 += part.invalid_slot0
        series.false_confirms += part.false_confirms
        series.test_boots += part.test_boots
        series.stopped_early |= part.stopped_early
        for k, v in part.counters.items():
            if isinstance(v, int):
                old = series.counters.get(k, 0)
                series.counters[k] = (old if isinstance(old, int) else 0) + v
    series.transfers.sort(key=lambda t: t.index)
    return series


def _device(
    work: Path, images: ImageSet, indices: list[int], faulty: bool, j: int, deadline: Deadline
) -> Series:
    layout = load_board(BOARD)
    work.mkdir(parents=True, exist_ok=True)
    flash = work / "device.flash"
    dev_link, host_link = work / "device-tty", work / "host-tty"
    first = images.images[VERSIONS[0]]
    (work / "initial.img").write_bytes(first.data)
    keys = load_trusted_keys([images.pub])
    series = Series("")
    with Procs(work / "logs") as procs:
        vm = procs.add(
            "vmcu", vmcu_cmd(BOARD, flash, dev_link, load=work / "initial.img", key=images.pub)
        )
        start_vmcu(vm)
        port = str(dev_link)
        link = None
        if faulty:
            link = procs.add(
                "faultlink",
                [PY, "-m", "tools.faultlink", *_faultlink_args(str(dev_link), str(host_link), j)],
            )
            link.start().wait_for("faultlink: ready", 10.0)
            port = str(host_link)
        for i in indices:
            if deadline.passed:
                series.stopped_early = True
                break
            before = check_flash_file(flash, layout, images.pub)
            running = images.by_hash(before.tlv_hash or b"")
            target = images.images[
                VERSIONS[1] if running is None or running.version == VERSIONS[0] else VERSIONS[0]
            ]
            _erase_slot1(port)
            mark = vm.mark()
            t0 = time.monotonic()
            client = SmpClient(SerialLink(port, HOST_BAUD))
            outcome: Outcome | None = None
            try:
                outcome = DeviceUpdater(client, OPTIONS).update(
                    prepare(target.data, trusted_keys=keys)
                )
                status, reason = outcome.status, outcome.reason
            except Exception as exc:  # the invariant under test: nothing escapes
                status, reason = "exception", f"{type(exc).__name__}: {exc}"
            finally:
                client.link.close()
            tr = Transfer(i + 1, target.version, status, reason, time.monotonic() - t0)
            if outcome is not None:
                tr.log = list(outcome.log)
            if outcome is not None and outcome.upload is not None:
                up = outcome.upload
                tr.sent_bytes, tr.retries, tr.resyncs = up.sent_bytes, up.retries, up.resyncs
                tr.uploaded = True
            _check_boots(series, vm.lines(mark), images, i + 1)
            after = check_flash_file(flash, layout, images.pub)
            now = images.by_hash(after.tlv_hash or b"")
            tr.running = now.version if now else "?"
            tr.confirmed = after.confirmed
            if not after.valid or now is None:
                series.invalid_slot0.append(f"transfer {i + 1}: slot 0: {after.reason}")
            if status == "confirmed" and (tr.running != target.version or not tr.confirmed):
                series.false_confirms.append(
                    f"transfer {i + 1}: reported confirmed, device runs {tr.running} "
                    f"({'confirmed' if tr.confirmed else 'unconfirmed'})"
                )
            series.transfers.append(tr)
            log.info(
                "%s flow %d -> %s: %s %s (%.1f s) %s",
                "faulty" if faulty else "clean",
                tr.index,
                tr.target,
                tr.status,
                tr.reason,
                tr.seconds,
                "; ".join(tr.log),
            )
        if link is not None:
            link.stop()
            for line in reversed(link.lines()):
                if line.startswith("{"):
                    counters = json.loads(line)
                    extra = counters.pop("extra", {})
                    series.counters = {**counters, **extra}
                    break
    return series


def _faultlink_args(upstream: str, host: str, j: int) -> list[str]:
    args = ["--upstream", upstream, "--link", host]
    for k, v in FAULTS.items():
        args += [k, str(int(v) + j) if k == "--seed" else v]
    return args


def _check_boots(series: Series, lines: list[str], images: ImageSet, index: int) -> None:
    for line in lines:
        m = BOOT_RE.search(line)
        if m is None:
            continue
        if m[2] == "test":
            series.test_boots += 1
        if images.by_hash(m[5]) is None:
            series.corrupt_boots.append(f"transfer {index}: booted {m[3]} hash {m[5]}")
    for line in lines:
        if "PANIC" in line:
            series.corrupt_boots.append(f"transfer {index}: {line.strip()}")


def run(work: Path, quick: bool = False) -> CampaignResult:
    n = 3 if quick else 50
    res = CampaignResult("link", "Faulty serial line: full device flows through tools.faultlink")
    t0 = time.monotonic()
    images = make_images(work, BOARD, IMAGE_SIZE, VERSIONS)
    size = len(images.images[VERSIONS[0]].data)
    devices = 3 if quick else DEVICES
    clean = _series(work / "clean", images, n, False, devices, Deadline(120 if quick else 300))
    faulty = _series(work / "faulty", images, n, True, devices, Deadline(90 if quick else 600))
    for s in (clean, faulty):
        for what, items in (
            ("a corrupt or unknown image booted", s.corrupt_boots),
            ("slot 0 failed validation", s.invalid_slot0),
            ("reported confirmed but not so on the device", s.false_confirms),
        ):
            res.violations += [f"{s.label}: {what}: {x}" for x in items]
        res.violations += [
            f"{s.label}: transfer {t.index}: an exception escaped the flow: {t.reason}"
            for t in s.transfers
            if t.status == "exception"
        ]
    res.violations += [
        f"clean line: transfer {t.index} did not complete: {t.status}: {t.reason}"
        for t in clean.transfers
        if t.status != "confirmed"
    ]
    fl_args = _faultlink_args("DEVICE_PTY", "HOST_PTY", 0)
    rows = []
    for s in (clean, faulty):
        times = [t.seconds for t in s.transfers] or [0.0]
        rows.append(
            [
                s.label,
                str(len(s.transfers)),
                str(s.completed),
                str(s.count("failed") + s.count("reverted")),
                str(s.count("exception")),
                str(len(s.corrupt_boots)),
                str(len(s.invalid_slot0)),
                f"{s.seconds:.1f}",
                f"{sum(times):.1f} / {statistics.median(times):.2f} / {max(times):.2f}",
            ]
        )
    flow_s = {s.label: sum(t.seconds for t in s.transfers) for s in (clean, faulty)}
    ratio = flow_s["faulty line"] / flow_s["clean line"] if flow_s["clean line"] else 0.0
    notes = [
        f"Image: {size} bytes, ECDSA-P256 signed by imgtool, versions {VERSIONS[0]} and "
        f"{VERSIONS[1]} alternating; fota-vmcu validates signatures (--key). Slot 1 is "
        "erased before each flow so the whole image crosses the line every time.",
        f"{n} flows on {devices} virtual MCUs served at once (each its own line and seed); "
        f"time of the flows summed: faulty / clean = {ratio:.0f}x.",
        f"Faulty line counters (tools.faultlink): {json.dumps(faulty.counters)}",
    ]
    if faulty.stopped_early or clean.stopped_early:
        notes.append("A series stopped before N at its time budget (see the transfer count).")
    notes += [
        f"Flow {t.index} ended {t.status.upper()}: {t.reason} (its log: {'; '.join(t.log)})"
        for t in faulty.transfers
        if t.status in ("failed", "reverted", "exception")
    ][:10]
    up = [t for t in faulty.transfers if t.uploaded]
    if up:
        notes.append(
            "Faulty-line uploads: median "
            f"{statistics.median(t.sent_bytes for t in up) / size:.2f}x the image sent, "
            f"median {statistics.median(t.retries for t in up):g} timeouts/link drops and "
            f"{statistics.median(t.resyncs for t in up):g} resyncs per upload."
        )
    cmd = command_line("reliability", ["--only", "link"] + (["--quick"] if quick else []))
    res.figures.append(
        Figure(
            f"{n} update flows, clean line vs faulty line",
            [
                "line",
                "flows",
                "completed (hash matches, confirmed)",
                "ended FAILED cleanly",
                "exceptions escaped",
                "corrupt images booted",
                "slot 0 invalid",
                "wall s",
                "flow s: sum / median / max",
            ],
            rows,
            cmd,
            notes,
            [
                command_line(
                    "bootloader.sim.vmcu",
                    [
                        "--board",
                        BOARD,
                        "--flash",
                        "FLASH",
                        "--link",
                        "DEVICE_PTY",
                        "--key",
                        "PUBKEY",
                        "--load",
                        "IMAGE",
                    ],
                ),
                command_line("tools.faultlink", fl_args) + "  (faulty line only; seed + k "
                "for the k-th device)",
            ],
        )
    )
    res.data = {"clean": clean, "faulty": faulty, "n": n}
    res.seconds = time.monotonic() - t0
    return res
