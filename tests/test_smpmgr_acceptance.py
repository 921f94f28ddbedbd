"""The receiver's acceptance with a stock SMP tool: smpmgr drives fota-vmcu end to end.

smpmgr upgrade IMAGE; smpmgr image state-write HASH; smpmgr os reset
-> the new version runs, active and confirmed; a crashing image reverts on its own.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Final

from bridge_kit import firmware, tlv_hash
from test_bridge_interop import smpmgr_command, smpmgr_state

from harness.vmcu import Vmcu

TIMEOUT_S: Final = 60


def smpmgr(port: Path, *args: str) -> str:
    env = {**os.environ, "COLUMNS": "500", "NO_COLOR": "1"}
    proc = subprocess.run(
        [*smpmgr_command(), "--port", str(port), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"smpmgr {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def active(port: Path) -> dict[str, object]:
    rows = smpmgr_state(port)
    (row,) = [r for r in rows if r.get("active") is True]
    return row


def wait_active(port: Path, version: str, timeout_s: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    row: dict[str, object] = {}
    while time.monotonic() < deadline:
        row = active(port)
        if row.get("version") == version and row.get("confirmed") is True:
            return row
        time.sleep(0.3)
    raise AssertionError(f"{version} never became active and confirmed: {row}")


def test_smpmgr_upgrade_test_reset_runs_the_new_version(tmp_path: Path) -> None:
    v1 = firmware("1.0.0", seed="acc-v1")
    v2 = firmware("2.0.0", seed="acc-v2")
    with Vmcu(tmp_path, load=v1) as vm:
        (tmp_path / "v2.img").write_bytes(v2)
        smpmgr(vm.link, "upgrade", str(tmp_path / "v2.img"))
        smpmgr(vm.link, "image", "state-write", tlv_hash(v2).hex())
        smpmgr(vm.link, "os", "reset")
        vm.wait_for_log(r"swap type test, running version 2\.0\.0")
        row = wait_active(vm.link, "2.0.0")
        assert row["hash"] == tlv_hash(v2).hex()


def test_smpmgr_crash_image_reverts_on_its_own(tmp_path: Path) -> None:
    v1 = firmware("1.0.0", seed="acc-v1")
    crash = firmware("3.0.0", on_boot="crash", seed="acc-crash")
    with Vmcu(tmp_path, load=v1) as vm:
        (tmp_path / "crash.img").write_bytes(crash)
        smpmgr(vm.link, "upgrade", str(tmp_path / "crash.img"))
        smpmgr(vm.link, "image", "state-write", tlv_hash(crash).hex())
        smpmgr(vm.link, "os", "reset")
        vm.wait_for_log(r"swap type revert, running version 1\.0\.0")
        wait_active(vm.link, "1.0.0")
