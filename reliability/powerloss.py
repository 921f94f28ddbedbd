"""Campaign: power lost before every flash operation of the whole device flow.

In-process on the tiny board (:mod:`reliability.inproc`): the bridge's own DeviceUpdater
drives the mcu/ receiver through upload -> image state write (test) -> reset -> MCUboot
swap -> the firmware confirms itself; a second variant's firmware never confirms, so the
flow resets again and MCUboot reverts.  The clean flow's flash operations are counted,
then for every cut index k: restore the initial flash, run the flow with
``flash.arm_power_cut(k)``, power on (MCUboot boots to completion, the firmware's
confirm-on-boot runs), and let the host run the device flow again from the device's state,
as a retrying bridge would (a few attempts).  Invariants: a valid image (one of the two,
its hash and slot checks passing) boots after every cut, and the device ends in the right
state: the new image confirmed (confirm variant), the old one (revert variant).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bootloader.formats.image import ImageError
from bootloader.formats.layout import Layout, load_board
from bootloader.formats.verify import verify_image
from bootloader.sim.model.boot import BootResult, boot
from host_bridge.device import DeviceUpdater, Outcome, UpdateOptions
from host_bridge.image.prepare import PreparedImage, prepare
from host_bridge.image.sign import SigningParams, sign_payload
from mcu import mcuboot as mb
from reliability.common import CampaignResult, Figure, command_line, firmware_payload
from reliability.inproc import CutFlash, Device, FakeClock, PowerLost

BOARD: Final = "tiny"
PHASES: Final = ("upload", "pending write", "swap", "confirm", "revert")
HOST_ATTEMPTS: Final = 3  # device flows a retrying bridge runs after power comes back
OPTIONS: Final = UpdateOptions(
    confirm_timeout_s=2.0, boot_timeout_s=2.0, poll_s=0.1, reset_grace_s=0.5
)


@dataclass
class Variant:
    name: str
    on_boot: str  # the new firmware's behaviour
    expect_status: str
    expect_running: str  # "new" or "old"


VARIANTS: Final = (
    Variant("confirm", "confirm", "confirmed", "new"),
    Variant("revert", "stay-unconfirmed", "reverted", "old"),
)


@dataclass
class VariantResult:
    variant: str
    clean_ops: int
    clean_by_phase: Counter[str] = field(default_factory=Counter)
    cuts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    after_cut_running: Counter[str] = field(default_factory=Counter)  # (phase, old/new)
    attempts: Counter[int] = field(default_factory=Counter)
    bad_by_phase: Counter[str] = field(default_factory=Counter)


def _images(layout: Layout, payload_size: int) -> dict[str, PreparedImage]:
    params = SigningParams.from_layout(layout)
    out = {}
    for name, version, on_boot in (
        ("old", "1.0.0", "confirm"),
        ("new-confirm", "2.0.0", "confirm"),
        ("new-stay-unconfirmed", "2.0.0", "stay-unconfirmed"),
    ):
        data = sign_payload(firmware_payload(payload_size, name, on_boot), None, version, params)
        out[name] = prepare(data)
    return out


def _fresh(layout: Layout, old: PreparedImage) -> bytes:
    flash = CutFlash(layout)
    area = flash.area(layout.slot0)
    pad = bytes([layout.erased_val]) * (-len(old.data) % layout.write_size)
    area.write(0, old.data + pad)
    return flash.snapshot()


def _flow(device: Device, image: PreparedImage) -> Outcome:
    clock = FakeClock()
    return DeviceUpdater(device.client(), OPTIONS, sleep=clock.sleep, clock=clock.clock).update(
        image
    )


def _valid_boot(
    result: BootResult, flash: CutFlash, layout: Layout, known: dict[str, bytes]
) -> str | None:
    """Why ``result`` is not a valid boot of one of the two images (None: it is)."""
    if result.booted is None:
        return f"nothing boots: {result.panic}"
    which = next((k for k, h in known.items() if h.hex() == result.booted.hash), None)
    if which is None:
        return f"an unknown image boots (hash {result.booted.hash[:16]})"
    pri = flash.area(layout.slot0)
    info = mb.image_info(pri)
    if info is None:
        return "slot 0 has no image header"
    try:
        verdict = verify_image(pri.read(0, int(info["size"])), [])
    except ImageError as exc:
        return f"slot 0 does not parse: {exc}"
    if not verdict.ok:
        return f"slot 0 fails validation: {verdict.reason}"
    return None


def _run_variant(
    layout: Layout, images: dict[str, PreparedImage], variant: Variant
) -> VariantResult:
    old, new = images["old"], images[f"new-{variant.on_boot}"]
    known = {"old": old.hash, "new": new.hash}
    start = _fresh(layout, old)
    flash = CutFlash(layout)
    flash.restore(start)
    device = Device(layout, flash)
    flash.trace.clear()
    outcome = _flow(device, new)
    res = VariantResult(variant.name, len(flash.trace), Counter(flash.trace))
    if outcome.status != variant.expect_status:
        res.failures.append(f"the clean flow ended {outcome.status}: {outcome.reason}")
        return res
    for k in range(1, res.clean_ops + 1):
        phase = flash.trace[k - 1] if k - 1 < len(flash.trace) else "?"
        flash.restore(start)
        flash.revive()
        device = Device(layout, flash)
        ops0 = flash.ops
        flash.arm_power_cut(k)
        with contextlib.suppress(PowerLost):
            _flow(device, new)
        if not flash.dead:
            res.failures.append(f"cut {k} ({phase}): the flow ended before operation {k}")
            continue
        assert flash.ops - ops0 == k - 1
        res.cuts[phase] += 1
        flash.revive()
        why = None
        try:
            device.power_on()
        except PowerLost:
            why = "the flash stayed dead"
        last = device.boots[-1]
        why = why or _valid_boot(last, flash, layout, known)
        if why is not None:
            res.failures.append(f"cut {k} ({phase}): after power on: {why}")
            res.bad_by_phase[phase] += 1
            continue
        assert last.booted is not None
        running = "new" if last.booted.hash == new.hash.hex() else "old"
        res.after_cut_running[f"{phase}: {running}"] += 1
        status, reason = "", ""
        for attempt in range(1, HOST_ATTEMPTS + 1):
            out = _flow(device, new)
            status, reason = out.status, out.reason
            if status == variant.expect_status or (
                variant.expect_running == "new" and status == "confirmed"
            ):
                res.attempts[attempt] += 1
                break
        else:
            res.failures.append(
                f"cut {k} ({phase}): {HOST_ATTEMPTS} device flows after power on ended "
                f"{status}: {reason}"
            )
            res.bad_by_phase[phase] += 1
            continue
        # One more reset: the state must hold, and stay what the variant expects.
        final = boot(flash, layout)
        why = _valid_boot(final, flash, layout, known)
        want = known[variant.expect_running].hex()
        if why is None and (
            final.booted is None
            or final.booted.hash != want
            or not final.booted.confirmed
            or final.swap_type != "none"
        ):
            b = final.booted
            why = (
                f"ends running {'new' if b and b.hash == new.hash.hex() else 'old'} "
                f"({'confirmed' if b and b.confirmed else 'unconfirmed'}), next boot "
                f"{final.swap_type}; expected the {variant.expect_running} image confirmed"
            )
        if why is not None:
            res.failures.append(f"cut {k} ({phase}): final state: {why}")
            res.bad_by_phase[phase] += 1
    return res


def run(work: Path, quick: bool = False) -> CampaignResult:
    t0 = time.monotonic()
    res = CampaignResult("powerloss", "Power loss at every flash operation of the device flow")
    layout = load_board(BOARD)
    payload_size = 3000
    images = _images(layout, payload_size)
    # Every cut point, at both sizes: the whole campaign takes seconds in-process.
    results = [_run_variant(layout, images, v) for v in VARIANTS]
    rows = []
    for r in results:
        for phase in PHASES:
            if not r.clean_by_phase[phase]:
                continue
            after = ", ".join(
                f"{k.split(': ')[1]} {n}"
                for k, n in sorted(r.after_cut_running.items())
                if k.startswith(phase + ": ")
            )
            rows.append(
                [
                    r.variant,
                    phase,
                    str(r.clean_by_phase[phase]),
                    str(r.cuts[phase]),
                    str(r.bad_by_phase[phase]),
                    after or "-",
                ]
            )
        rows.append(
            [
                r.variant,
                "**all**",
                str(r.clean_ops),
                str(sum(r.cuts.values())),
                str(len(r.failures)),
                "host flows needed after power on: "
                + ", ".join(f"{n}x {a}" for a, n in sorted(r.attempts.items())),
            ]
        )
        res.violations += [f"{r.variant}: {f}" for f in r.failures]
    size = len(images["old"].data)
    cmd = command_line("reliability", ["--only", "powerloss"] + (["--quick"] if quick else []))
    res.figures.append(
        Figure(
            "Cut points per phase",
            [
                "variant",
                "phase",
                "flash ops (clean flow)",
                "cut points run",
                "bad outcomes",
                "image running after power on",
            ],
            rows,
            cmd,
            [
                f"Board {BOARD} ({layout.sector_size}-byte sectors, {layout.write_size}-byte "
                f"writes, {layout.mode}); images of {size} bytes (hash-only, imgtool); receiver "
                "SMP buffer 512 bytes, so the upload takes several chunks.",
                "Each cut: restore the initial flash, run the flow with the power cut armed, "
                "power on (MCUboot boots to completion, the firmware confirms itself if it "
                f"does so), then up to {HOST_ATTEMPTS} device flows from the device's state.",
                "'image running after power on': which image MCUboot booted right after the "
                "cut. A cut in the middle of a swap resumes it; a cut in the test mark after "
                "its magic was written still gives a test swap; a cut before the firmware's "
                "confirm reverts to the old image (MCUboot's rule for an unconfirmed test "
                "image), and the host's next flow tests the new one again.",
            ],
        )
    )
    res.data = {"variants": results}
    res.seconds = time.monotonic() - t0
    return res
