"""Shared by the benchmarks: sizes, the report's bookkeeping, images and the virtual MCU."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bootloader.formats.layout import Layout
from bootloader.sim.testimages import payload, sign
from harness.vmcu import Vmcu as HarnessVmcu
from harness.vmcu import VmcuError
from host_bridge.smp.client import SmpClient
from host_bridge.smp.link import SerialLink

REPO = Path(__file__).resolve().parent.parent
KIB = 1024
MIB = 1024 * KIB
IMAGE_SIZE = 256 * KIB
VMCU_READY_S = 20.0


def repo_env() -> dict[str, str]:
    """The environment for a child process that imports this project's packages."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


# -- bookkeeping --------------------------------------------------------------------------


class Paths:
    """Renders commands for the report: the temp dir and interpreter become placeholders."""

    def __init__(self, tmp: Path, smpmgr: str | None) -> None:
        self.tmp = tmp
        self.smpmgr = smpmgr

    def show(self, cmd: Sequence[str]) -> str:
        out = []
        for arg in cmd:
            if arg == sys.executable:
                arg = "python"
            elif self.smpmgr is not None and arg == self.smpmgr:
                arg = "smpmgr"
            else:
                arg = arg.replace(str(self.tmp), "$TMP")
            out.append(arg if re.fullmatch(r"[\w@%+=:,./$<>-]+", arg) else shlex.quote(arg))
        return " ".join(out)


@dataclass
class Report:
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    scrub: dict[str, str] = field(default_factory=dict)

    def command(self, text: str) -> None:
        if text not in self.commands:
            self.commands.append(text)

    def note(self, text: str) -> None:
        for path, name in self.scrub.items():
            text = text.replace(path, name)
        print(f"note: {text}", flush=True)
        self.notes.append(text)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_rate(bps: float | None) -> str:
    if bps is None:
        return "n/a"
    if bps >= 1e6:
        return f"{bps / 1e6:.2f} MB/s"
    return f"{bps / 1e3:.1f} kB/s"


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def fmt_kib(n: float) -> str:
    return f"{n / KIB:,.1f} MiB" if n >= KIB else f"{n:,.0f} KiB"


# -- images -------------------------------------------------------------------------------


def image_of_size(total: int, version: str, layout: Layout, seed: str) -> bytes:
    """A hash-only signed image of exactly ``total`` bytes (header + payload + TLVs)."""
    probe = sign(payload(64, seed), version, layout)
    overhead = len(probe) - 64
    img = sign(payload(total - overhead, seed), version, layout)
    if len(img) != total:  # TLV sizes do not depend on the payload; this is a fallback
        img = sign(payload(total - overhead + (total - len(img)), seed), version, layout)
    return img


# -- the virtual MCU ----------------------------------------------------------------------


class Vmcu(HarnessVmcu):
    """``fota-vmcu`` for the benchmarks: the harness's, with what a report shows of it."""

    def __init__(self, tmp: Path, name: str, board: str, args: Sequence[str], load: Path) -> None:
        super().__init__(tmp, board, load=load, args=args, name=name)

    @property
    def cmd(self) -> list[str]:
        return self.command()

    def start(self, timeout_s: float = VMCU_READY_S) -> None:
        super().start(timeout_s)

    def exit_status(self) -> str:
        rc = self.returncode
        if rc is None:
            return "running"
        return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"

    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a bounded wait); a device that died by itself is reported
        by the benchmark that saw it, not here."""
        with contextlib.suppress(VmcuError):
            self.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def smp_client(link: Path, baud: int, framing: str) -> Iterator[SmpClient]:
    client = SmpClient(SerialLink(str(link), baud, framing), timeout_s=5.0)
    client.link.open()
    try:
        yield client
    finally:
        client.link.close()


def erase_secondary(link: Path, baud: int, framing: str) -> None:
    """Empty slot 1, or the device would answer the next upload of that image with match."""
    with smp_client(link, baud, framing) as client:
        client.erase(1)


def slot1_holds(link: Path, baud: int, framing: str, version: str) -> bool:
    with smp_client(link, baud, framing) as client:
        return any(s.slot == 1 and s.version.startswith(version) for s in client.image_state())
