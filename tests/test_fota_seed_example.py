"""The seed's own example program (Zerynth aws_iot_fota documentation, adapted only in its
imports: tests/seed_example/main.py) updates a simulated board from 1.0.0 to 1.1.0 through
mosquitto, the local jobs service and its HTTPS file server, with the seed's job document.

First boot: the program publishes samples; the job is created while it runs, and its
periodic ``handle_fota_jobs(myjobs)`` takes the notification, installs the image and resets.
MCUboot's model swaps.  Second boot: ``handle_fota_jobs(myjobs, force=True)`` confirms the
new firmware and the job is SUCCEEDED; the program goes on publishing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from fota_direct_kit import firmware, seed_doc
from fota_direct_stack import RESET_EXIT, THING, Stack, open_stack

SEED_DIR: Final = Path(__file__).resolve().parent / "seed_example"
REPO: Final = SEED_DIR.parent.parent


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    images = {"1.0.0": firmware("1.0.0"), "1.1.0": firmware("1.1.0", 1800)}
    with open_stack(tmp_path, images) as s:
        yield s


def seed_program(stack: Stack, samples: int) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(SEED_DIR), str(REPO)]),
        FOTA_SEED_FLASH=str(stack.flash_path),
        FOTA_SEED_BOARD=stack.layout.name,
        FOTA_SEED_BROKER=f"{stack.broker.host}:{stack.broker.port}",
        FOTA_SEED_THING=THING,
        FOTA_SEED_CA=str(stack.files.ca_path),
        FOTA_SEED_SAMPLES=str(samples),
    )
    return [sys.executable, "-u", str(SEED_DIR / "main.py")], env


def test_the_seed_example_updates_the_board(stack: Stack) -> None:
    new = stack.images["1.1.0"]
    doc = seed_doc(stack.publish("app-1.1.0.bin", new), new)

    cmd, env = seed_program(stack, samples=150)  # at most 15 s of samples before it stops
    first = stack.run(
        cmd,
        env,
        cwd=SEED_DIR,
        when=("publish random sample...", lambda: stack.create("fw-110", doc)),
    )
    assert first.code == RESET_EXIT, f"no reset:\n{first.stdout}\n{first.stderr}"
    assert first.report == {"reset": True, "running": "1.0.0"}
    assert "running 1.0.0" in first.stdout
    assert stack.execution("fw-110")["details"]["phase"] == "testing"

    booted = stack.boot()
    assert (booted.swap_type, booted.booted.version) == ("test", "1.1.0")  # type: ignore[union-attr]

    cmd, env = seed_program(stack, samples=2)
    second = stack.run(cmd, env, cwd=SEED_DIR)
    assert second.code == 0, second.stderr
    assert "running 1.1.0" in second.stdout
    assert "samples done" in second.stdout  # the program went on after the update
    ex = stack.execution("fw-110")
    assert ex["status"] == "SUCCEEDED"
    assert ex["details"]["version"] == "1.1.0"
    assert stack.boot().booted.version == "1.1.0"  # type: ignore[union-attr]  # confirmed
