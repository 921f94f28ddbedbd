"""``--help`` of every command and subcommand exits 0 quietly, and a usage error names the
program and points to ``--help``; each command runs as a process, as a shell sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
from cli_kit import (
    BOOT,
    BRIDGE,
    BUNDLE,
    EXIT_ERROR,
    FAULTLINK,
    JOBS,
    OVERLAY,
    RELIABILITY,
    REPO_ROOT,
    VMCU,
    run,
)

# -- --help ------------------------------------------------------------------------------------
HELP: Final = (
    [
        (*BRIDGE, *sub)
        for sub in (
            (),
            ("keys",),
            ("keys", "new"),
            ("sign",),
            ("upload",),
            ("update",),
            ("run",),
            ("state",),
            ("reset",),
            ("confirm",),
            ("jobs",),
            ("jobs", "serve"),
            ("jobs", "create"),
            ("jobs", "list"),
            ("jobs", "describe"),
            ("jobs", "cancel"),
        )
    ]
    + [
        (*BOOT, *sub)
        for sub in (
            (),
            ("boards",),
            ("inspect",),
            ("load",),
            ("pending",),
            ("confirm",),
            ("state",),
            ("boot",),
            ("dump",),
        )
    ]
    + [
        (*JOBS, "serve"),
        VMCU,
        FAULTLINK,
        BUNDLE,
        RELIABILITY,
        OVERLAY,
        ("-m", "bootloader.sim.powercut"),
    ]
)


@pytest.mark.parametrize("argv", HELP, ids=[" ".join(a[1:]) for a in HELP])
def test_help_exits_0_quietly(argv: tuple[str, ...], tmp_path: Path) -> None:
    proc = run((*argv, "--help"), REPO_ROOT, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ") and proc.stderr == ""


def test_usage_errors_name_the_program_and_the_help(tmp_path: Path) -> None:
    proc = run((*BRIDGE, "state", "--port", "x", "--baud", "fast"), REPO_ROOT, tmp_path)
    assert proc.returncode == EXIT_ERROR
    assert proc.stderr.startswith("fota-bridge state: error: ")
    assert proc.stderr.rstrip().endswith("--help)")
