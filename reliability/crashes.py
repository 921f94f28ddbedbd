"""Campaign: crashes.

(a) The virtual MCU is killed (SIGKILL: a power cut for the process, its flash file keeps
what was written) and started again three times during one upload, at 25, 50 and 75 % of
the image; the device flow must still end with the right image running and confirmed.
Whether each restart resumed or started the upload again is reported.

(b) The bridge daemon is killed (SIGKILL) at random points of a job on the full local stack
(mosquitto, the local jobs service, fota-vmcu) and started again; every job must end
SUCCEEDED with its image running and confirmed, and no image may be test-booted twice for
one job (the virtual MCU's "swap type test" boots are counted per job).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bootloader.formats.layout import load_board
from harness.procs import Procs, start_vmcu, vmcu_cmd
from host_bridge.device import DeviceUpdater, UpdateOptions
from host_bridge.image.prepare import load_trusted_keys, prepare
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink
from reliability.common import (
    CampaignResult,
    Deadline,
    Figure,
    ImageSet,
    check_flash_file,
    command_line,
    make_images,
)
from reliability.stack import Stack, processes

BOARD: Final = "nrf52840"
IMAGE_SIZE: Final = 128 * 1024
VERSIONS: Final = ("1.1.0", "1.2.0", "1.3.0")  # (b) rotates all three: slot 1 holds the
# previous image after a swap, so the next one is never staged already and is sent whole
KILL_AT: Final = (0.25, 0.50, 0.75)
STACK_BAUD: Final = 921600  # paced like a fast UART, so kills land in the upload too
JOB_TIMEOUT_S: Final = 120.0
VMCU_FILES: Final = (
    "--flash",
    "FLASH",
    "--link",
    "DEVICE_PTY",
    "--key",
    "PUBKEY",
    "--load",
    "IMAGE",
)


# -- (a) the device killed mid-upload ---------------------------------------------------------
@dataclass
class DeviceKills:
    kills: list[int] = field(default_factory=list)  # acknowledged bytes when killed
    lowest_after: list[int] = field(default_factory=list)  # least progress after each restart
    status: str = ""
    reason: str = ""
    running: str = ""
    confirmed: bool = False
    test_boots: int = 0
    unknown_boots: int = 0
    size: int = 0
    seconds: float = 0.0


def _device_kills(work: Path, images: ImageSet) -> DeviceKills:
    layout = load_board(BOARD)
    work.mkdir(parents=True, exist_ok=True)
    old, new = images.images[VERSIONS[0]], images.images[VERSIONS[1]]
    (work / "initial.img").write_bytes(old.data)
    flash, link = work / "device.flash", work / "device-tty"
    out = DeviceKills(size=len(new.data))
    with Procs(work / "logs") as procs:
        vm = procs.add(
            "vmcu", vmcu_cmd(BOARD, flash, link, load=work / "initial.img", key=images.pub)
        )
        start_vmcu(vm)
        mark = vm.mark()

        def progress(phase: str, done: int, total: int) -> None:
            if phase != "uploading" or total == 0:
                return
            if out.lowest_after:  # replies already on their way still count up at first
                out.lowest_after[-1] = min(out.lowest_after[-1], done)
            k = len(out.kills)
            if k < len(KILL_AT) and done >= KILL_AT[k] * total:
                out.kills.append(done)
                out.lowest_after.append(done)
                vm.kill()
                start_vmcu(vm)

        client = SmpClient(SerialLink(str(link), 921600))
        t0 = time.monotonic()
        try:
            outcome = DeviceUpdater(client, UpdateOptions(boot_timeout_s=20), progress).update(
                prepare(new.data, trusted_keys=load_trusted_keys([images.pub]))
            )
            out.status, out.reason = outcome.status, outcome.reason
        except Exception as exc:  # the invariant: nothing escapes
            out.status, out.reason = "exception", f"{type(exc).__name__}: {exc}"
        finally:
            client.link.close()
        out.seconds = time.monotonic() - t0
        lines = vm.lines(mark)
    after = check_flash_file(flash, layout, images.pub)
    now = images.by_hash(after.tlv_hash or b"")
    out.running = now.version if now and after.valid else "?"
    out.confirmed = after.confirmed
    out.test_boots = sum(1 for line in lines if "swap type test" in line)
    out.unknown_boots = sum(
        1
        for line in lines
        if " hash " in line and images.by_hash(line.rsplit(" hash ", 1)[1].strip()) is None
    )
    return out


# -- (b) the bridge killed mid-job ------------------------------------------------------------
@dataclass
class BridgeKill:
    point: int
    delay_s: float
    phase: str  # the job's phase when the bridge was killed
    status: str
    test_boots: list[str]
    running: str
    confirmed: bool
    reason: str = ""


def _bridge_kills(
    work: Path, images: ImageSet, points: int, seed: int, deadline: Deadline
) -> tuple[float, list[BridgeKill], list[str]]:
    layout = load_board(BOARD)
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kills: list[BridgeKill] = []
    problems: list[str] = []
    with Procs(work / "logs") as procs:
        stack = Stack(work, procs, images, BOARD, STACK_BAUD, images.images[VERSIONS[0]])
        try:
            stack.up()
            assert stack.vmcu is not None and stack.bridge is not None
            # A clean job first: how long one takes, so kill points spread over all of it.
            t0 = time.monotonic()
            stack.create_job("clean-0", images.images[VERSIONS[1]])
            state = stack.wait_job("clean-0", JOB_TIMEOUT_S)
            clean_s = time.monotonic() - t0
            if state.status != "SUCCEEDED":
                problems.append(f"the clean job ended {state.status}: {state.details}")
                return clean_s, kills, problems
            current = VERSIONS[1]
            for i in range(points):
                if deadline.passed:
                    problems.append(f"time budget reached after {i} of {points} kill points")
                    break
                target = VERSIONS[(VERSIONS.index(current) + 1) % len(VERSIONS)]
                job_id = f"kill-{i + 1}"
                delay = rng.uniform(0.0, clean_s)
                mark = stack.vmcu.mark()
                stack.create_job(job_id, images.images[target])
                time.sleep(delay)
                phase = stack.job(job_id)
                where = phase.details.get("phase", "") or phase.status.lower()
                if phase.status in ("SUCCEEDED", "FAILED"):
                    where = "after the end"
                stack.bridge.kill()
                stack.start_bridge()
                state = stack.wait_job(job_id, JOB_TIMEOUT_S)
                after = check_flash_file(stack.flash, layout, images.pub)
                now = images.by_hash(after.tlv_hash or b"")
                kills.append(
                    BridgeKill(
                        i + 1,
                        delay,
                        where,
                        state.status,
                        stack.test_boots(mark),
                        now.version if now and after.valid else "?",
                        after.confirmed,
                        state.details.get("reason", ""),
                    )
                )
                if now is not None:
                    current = now.version
        finally:
            stack.close()
    return clean_s, kills, problems


def run(work: Path, quick: bool = False) -> CampaignResult:
    t0 = time.monotonic()
    res = CampaignResult("crashes", "Crashes: the device and the bridge killed mid-update")
    images = make_images(work, BOARD, IMAGE_SIZE, VERSIONS)
    dk = _device_kills(work / "device-kills", images)
    if dk.status != "confirmed" or dk.running != VERSIONS[1] or not dk.confirmed:
        res.violate(
            f"device killed mid-upload: the flow ended {dk.status} ({dk.reason}); "
            f"device runs {dk.running}"
        )
    if dk.status == "exception":
        res.violate(f"device killed mid-upload: an exception escaped: {dk.reason}")
    if dk.unknown_boots:
        res.violate(f"device killed mid-upload: {dk.unknown_boots} boots of an unknown image")
    if dk.test_boots != 1:
        res.violate(f"device killed mid-upload: {dk.test_boots} test boots (want 1)")
    if len(dk.kills) != len(KILL_AT):
        res.violate(f"device killed mid-upload: only {len(dk.kills)} kills happened")
    how = [
        "resumed" if low >= k else f"started again (progress fell back to {low})"
        for k, low in zip(dk.kills, dk.lowest_after, strict=True)
    ]
    cmd = command_line("reliability", ["--only", "crashes"] + (["--quick"] if quick else []))
    res.figures.append(
        Figure(
            "(a) fota-vmcu killed (SIGKILL) and restarted 3 times during one upload",
            ["kill", "acknowledged bytes at the kill", "upload after the restart"],
            [
                [str(i + 1), f"{k} of {dk.size}", how[i] if i < len(how) else "-"]
                for i, k in enumerate(dk.kills)
            ]
            + [
                [
                    "end",
                    f"{dk.status}; running {dk.running} "
                    f"({'confirmed' if dk.confirmed else 'unconfirmed'}); "
                    f"{dk.test_boots} test boot",
                    f"{dk.seconds:.1f} s in all",
                ]
            ],
            cmd,
            [
                "How: after each restart the bridge's write fails (the old pty is gone), it "
                "reopens the port and sends the first chunk again with the image's SHA-256; the "
                "receiver "
                "finds that chunk at the start of slot 1 with an untouched trailer and answers "
                "with the offset after the last programmed write block ('resumed'), or erases and "
                "starts over ('started again'). The image's hash is checked when it completes.",
                f"Board {BOARD}, unthrottled pty, {dk.size}-byte signed image.",
            ],
            [
                command_line(
                    "bootloader.sim.vmcu",
                    ["--board", BOARD, *VMCU_FILES],
                )
                + "  (SIGKILLed and started again without --load)"
            ],
        )
    )
    res.data["device_kills"] = dk
    points = 3 if quick else 50
    clean_s, kills, problems = _bridge_kills(
        work / "bridge-kills", images, points, seed=7, deadline=Deadline(150 if quick else 540)
    )
    res.violations += [f"bridge kills: {p}" for p in problems if "time budget" not in p]
    res.notes += [p for p in problems if "time budget" in p]
    for k in kills:
        if k.status != "SUCCEEDED":
            res.violate(f"bridge kill {k.point} ({k.phase}): job ended {k.status}: {k.reason}")
        if len(k.test_boots) > 1:
            res.violate(
                f"bridge kill {k.point} ({k.phase}): image test-booted "
                f"{len(k.test_boots)} times: {k.test_boots}"
            )
        if k.status == "SUCCEEDED" and (k.running == "?" or not k.confirmed):
            res.violate(f"bridge kill {k.point}: SUCCEEDED but the device runs {k.running}")
    by_phase: Counter[str] = Counter(k.phase for k in kills)
    ok_phase: Counter[str] = Counter(
        k.phase for k in kills if k.status == "SUCCEEDED" and len(k.test_boots) == 1
    )
    twice = sum(1 for k in kills if len(k.test_boots) > 1)
    rows = [[p, str(n), str(ok_phase[p])] for p, n in sorted(by_phase.items())]
    rows.append(
        ["**all**", str(len(kills)), f"{sum(ok_phase.values())} (test-booted twice: {twice})"]
    )
    res.figures.append(
        Figure(
            f"(b) bridge daemon killed (SIGKILL) at {len(kills)} random points of a job, "
            "then started again",
            ["job phase at the kill", "kills", "jobs SUCCEEDED, image test-booted once"],
            rows,
            cmd,
            [
                f"Full local stack: mosquitto, the local jobs service (HTTPS file server), "
                f"fota-vmcu ({BOARD}, {STACK_BAUD} baud), `python -m host_bridge.cli run "
                "--config`. Kill delays uniform in [0, one clean job's duration = "
                f"{clean_s:.1f} s], seeded; the bridge is restarted at once.",
                "'after the end': the job had already finished when the kill came.",
            ],
            processes(BOARD, STACK_BAUD),
        )
    )
    res.data.update({"bridge_kills": kills, "clean_job_s": clean_s})
    res.seconds = time.monotonic() - t0
    return res
