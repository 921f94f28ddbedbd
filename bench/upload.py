"""Upload throughput: this project's uploader and ``smpmgr image upload``, side by side.

A 256 KiB image (nrf52840 layout) uploaded to ``fota-vmcu`` by both on the same device and
image, with the line paced at 115200 baud and unthrottled, in console and raw framing.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench.common import (
    IMAGE_SIZE,
    KIB,
    REPO,
    Paths,
    Report,
    Vmcu,
    erase_secondary,
    fmt_pct,
    fmt_rate,
    image_of_size,
    log,
    md_table,
    slot1_holds,
    smp_client,
)
from bootloader.formats.layout import load_board
from host_bridge.smp.upload import upload

BAUD = 115200
UNTHROTTLED_RUNS = 3
THROTTLED_RUNS = 1  # each 115200-baud upload of 256 KiB takes ~30 s or more
CONSOLE_CEILING = 3 / 4 * 124 / 127  # payload share of a console-framed line
SMPMGR_TIMEOUT_S = 240.0
# smpmgr's serial defaults (128-byte lines, 2 line buffers) send ~146-byte chunks; the
# "sized" variant tells it the device's 2048-byte buffer (16 lines of 128).
SMPMGR_SIZED = ["--line-length", "128", "--line-buffers", "16"]


@dataclass
class Runs:
    client: str
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    detail: str = ""
    na: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


def run_ours(link: Path, baud: int, framing: str, image: bytes, runs: Runs) -> None:
    erase_secondary(link, baud, framing)
    with smp_client(link, baud, framing) as client:
        r = upload(client, image)
    if r.match is not True or r.resumed_from:
        runs.failures.append(f"match={r.match}, resumed_from={r.resumed_from}")
        return
    runs.seconds.append(r.seconds)
    extra = f", {r.resyncs} resyncs, {r.retries} retries" if r.resyncs or r.retries else ""
    runs.detail = f"window {r.window} x {r.chunk} B{extra}"


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SMPMGR_TIMEOUT_S,
        env={**os.environ, "COLUMNS": "100"},
    )
    return time.monotonic() - t0, proc


def run_smpmgr(
    smpmgr: str,
    extra: list[str],
    link: Path,
    baud: int,
    image_path: Path,
    runs: Runs,
    report: Report,
    paths: Paths,
) -> None:
    """Wall time of ``smpmgr image upload`` minus that of ``smpmgr os echo`` just before it.

    The echo run pays what the upload run pays besides the upload: interpreter start-up,
    imports, opening the port, and smpclient's connect (which reads mcumgr params).
    """
    erase_secondary(link, baud, "console")
    base = [smpmgr, "--port", str(link), *extra]
    echo_cmd = [*base, "os", "echo", "bench"]
    up_cmd = [*base, "image", "upload", str(image_path)]
    report.command(paths.show(echo_cmd))
    report.command(paths.show(up_cmd))
    t_echo, p_echo = timed(echo_cmd)
    t_up, p_up = timed(up_cmd)
    if p_echo.returncode or p_up.returncode:
        bad = p_up if p_up.returncode else p_echo
        runs.failures.append(f"exit {bad.returncode}: {(bad.stdout + bad.stderr).strip()[-300:]}")
        return
    if not slot1_holds(link, baud, "console", "2.0.0"):
        runs.failures.append("slot 1 does not hold the image after the upload")
        return
    runs.seconds.append(t_up - t_echo)
    runs.detail = f"connect overhead {t_echo:.2f} s subtracted"


def attempt(vm: Vmcu, report: Report, label: str, runs: Runs, fn: Callable[[Runs], None]) -> None:
    """One measured run; if the virtual MCU died during it, restart it and run again once."""
    for tries in (1, 2):
        failed = len(runs.failures)
        try:
            fn(runs)
        except Exception as exc:
            runs.failures.append(f"{type(exc).__name__}: {exc}")
        log(f"  {label}: {runs.client} {runs.seconds[-1:] or runs.failures[-1:]}")
        if vm.running:
            return
        report.note(
            f"{label} of {runs.client}: fota-vmcu exited ({vm.exit_status()}) during the run; "
            f"restarted{' and the run repeated' if tries == 1 else ''}. Its log ended:\n"
            + "\n".join("      " + line for line in vm.log().splitlines()[-6:])
        )
        vm.stop()
        vm.start()
        if tries == 1 and len(runs.failures) > failed:
            del runs.failures[failed:]  # the repeated run stands for this one
        else:
            return


@dataclass
class Config:
    framing: str
    baud: int | None

    @property
    def name(self) -> str:
        return f"{self.framing}-{self.baud or 'unthrottled'}"

    @property
    def line(self) -> str:
        return f"{self.baud} baud" if self.baud else "unthrottled"


def bench_throughput(
    tmp: Path, report: Report, paths: Paths, smpmgr: str | None
) -> list[tuple[Config, Runs, list[Runs]]]:
    layout = load_board("nrf52840")
    v1 = tmp / "nrf52840-v1.img"
    v1.write_bytes(image_of_size(8 * KIB, "1.0.0", layout, "bench-v1"))
    image = image_of_size(IMAGE_SIZE, "2.0.0", layout, "bench-v2")
    image_path = tmp / "nrf52840-v2-256k.img"
    image_path.write_bytes(image)
    results = []
    configs = [Config(f, b) for b in (BAUD, None) for f in ("console", "raw")]
    for cfg in configs:
        n = THROTTLED_RUNS if cfg.baud else UNTHROTTLED_RUNS
        args = ["--framing", cfg.framing] + (["--baud", str(cfg.baud)] if cfg.baud else [])
        ours = Runs("fota-bridge upload")
        others: list[Runs] = []
        if cfg.framing == "console":
            others = [Runs("smpmgr image upload"), Runs("smpmgr " + " ".join(SMPMGR_SIZED))]
            if smpmgr is None:
                for r in others:
                    r.na = "smpmgr not installed"
        else:
            others = [Runs("smpmgr image upload", na="no raw framing in smpmgr")]
        line_baud = cfg.baud or BAUD  # the pty ignores the baud; our link uses it for timeouts
        log(f"throughput {cfg.name}: {n} run(s) per client")
        vm = Vmcu(tmp, cfg.name, "nrf52840", args, v1)
        report.command(paths.show(vm.cmd))
        try:
            with vm:
                for i in range(n):
                    label = f"run {i + 1}"
                    ours_fn = partial(run_ours, vm.link, line_baud, cfg.framing, image)
                    attempt(vm, report, label, ours, ours_fn)
                    for r, extra in zip(others, ([], SMPMGR_SIZED), strict=False):
                        if r.na or smpmgr is None:
                            continue
                        fn = partial(
                            run_smpmgr, smpmgr, extra, vm.link, line_baud, image_path,
                            report=report, paths=paths,
                        )  # fmt: skip
                        attempt(vm, report, label, r, fn)
        except Exception as exc:
            report.note(f"{cfg.name}: the virtual MCU failed: {exc}")
        results.append((cfg, ours, others))
    report.command(
        "# before every upload: SMP image erase of slot 1 (our client), so that no upload "
        "is answered early with match"
    )
    return results


def throughput_section(results: list[tuple[Config, Runs, list[Runs]]]) -> str:
    header = [
        "framing",
        "line",
        "client",
        "runs",
        "median s",
        "payload B/s",
        "efficiency",
        "of console ceiling",
        "ours ÷ this",
        "notes",
    ]
    rows = []
    for cfg, ours, others in results:
        ours_rate = IMAGE_SIZE / ours.median if ours.median else None
        for r in [ours, *others]:
            if r.na:
                rows.append([cfg.framing, cfg.line, r.client, "—", "—", "n/a", "—", "—", "—", r.na])
                continue
            med = r.median
            rate = IMAGE_SIZE / med if med else None
            eff = rate / (cfg.baud / 10) if rate and cfg.baud else None
            ceil = eff / CONSOLE_CEILING if eff is not None and cfg.framing == "console" else None
            ratio = "—"
            if r is not ours:
                ratio = f"{ours_rate / rate:.2f}x" if ours_rate and rate else "n/a"
            note = r.detail
            if r is not ours and eff and cfg.framing == "console":
                cap = CONSOLE_CEILING / eff
                note += f"; at this line ours ÷ this cannot exceed {cap:.2f}x (ceiling)"
            if r.failures:
                note = (
                    (note + "; " if note else "")
                    + f"{len(r.failures)} failed: "
                    + "; ".join(
                        f.replace("|", "/").replace("\n", " ").replace(str(REPO), ".")
                        for f in r.failures
                    )
                )
            rows.append(
                [
                    cfg.framing,
                    cfg.line,
                    r.client,
                    str(len(r.seconds)),
                    f"{med:.3f}" if med else "n/a",
                    fmt_rate(rate),
                    fmt_pct(eff),
                    fmt_pct(ceil),
                    ratio,
                    note,
                ]
            )
    text = [
        "## 1. Upload throughput, 256 KiB image (nrf52840 layout)",
        "",
        md_table(header, rows),
        "",
        f"Image: {IMAGE_SIZE:,} bytes. Seconds are the median of the runs (throttled "
        f"configurations: {THROTTLED_RUNS} run each, to keep the bench short; unthrottled: "
        f"{UNTHROTTLED_RUNS}). Ours: `UploadResult.seconds` (mcumgr params, first chunk "
        "with the slot erase, every chunk acknowledged). smpmgr: wall time of "
        "`smpmgr image upload` minus the wall time of `smpmgr os echo` run just before it "
        "(start-up, port open and connect). Efficiency = payload B/s ÷ (baud/10); the "
        f"console ceiling is 3/4 × 124/127 = {CONSOLE_CEILING * 100:.2f}% of the line rate "
        "(base64, 124 characters of 127 per line). Ours ÷ this: our payload rate over that "
        "client's, same device, image and line.",
    ]
    return "\n".join(text)
