"""Security properties of the bridge: (f) keys and state are private (0600 files, 0700
directories) even under umask 000.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from https_server import HttpsServer, Pki, Route
from security_kit import THING, daemon_rig, mode_of, run_job
from security_kit import signing as signing
from security_kit import web_pki as web_pki

from bootloader.formats.layout import Layout
from bootloader.sim.flash import Flash
from host_bridge import cli
from host_bridge.store import InFlight, Store
from localjobs import pki as local_pki
from localjobs.store import JobStore

pytestmark = pytest.mark.timeout(120)


# -- (f) private files and directories ------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 000: a file or directory is private only if the code asks for it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_signing_keys_are_written_0600(tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    assert cli.main(["keys", "new", str(key)]) == 0
    assert mode_of(key) == 0o600
    issued = local_pki.make_ca("test")
    issued.write(tmp_path / "ca.pem", tmp_path / "ca.key")
    assert mode_of(tmp_path / "ca.key") == 0o600


@pytest.mark.usefixtures("open_umask")
def test_the_bridge_store_is_private(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "bridge.sqlite")
    try:
        store.save(InFlight(THING, "j1", 1, 1, "downloading"))
        store.finish(THING, "j1", "SUCCEEDED")
        assert mode_of(tmp_path / "state") == 0o700
        files = sorted((tmp_path / "state").iterdir())
        assert {p.name for p in files} >= {"bridge.sqlite", "bridge.sqlite-wal"}
        assert all(mode_of(p) == 0o600 for p in files), {p.name: oct(mode_of(p)) for p in files}
    finally:
        store.close()


@pytest.mark.usefixtures("open_umask")
def test_the_local_jobs_store_is_private(tmp_path: Path) -> None:
    with JobStore(tmp_path / "jobs" / "jobs.sqlite3") as store:
        store.create_job("j1", [THING], json.dumps({"operation": "reboot"}))
        files = sorted((tmp_path / "jobs").iterdir())
        assert mode_of(tmp_path / "jobs") == 0o700
        assert all(mode_of(p) == 0o600 for p in files), {p.name: oct(mode_of(p)) for p in files}


@pytest.mark.usefixtures("open_umask")
def test_downloads_and_the_cache_are_private(
    tmp_path: Path, signing: dict[str, Any], web_pki: Pki
) -> None:
    state = tmp_path / "state"
    with HttpsServer(web_pki) as server, daemon_rig(state, signing, web_pki) as (bridge, _l):
        image = signing["untrusted"]  # downloaded and cached, then refused
        server.routes["/fw.bin"] = Route(body=image)
        run_job(bridge, {"url": server.url("/fw.bin"), "sha256": hashlib.sha256(image).hexdigest()})
    assert mode_of(state) == 0o700
    for directory in (state / "downloads", state / "cache"):
        assert mode_of(directory) == 0o700
        files = list(directory.iterdir())
        assert files and all(mode_of(p) == 0o600 for p in files)
    assert all(mode_of(p) == 0o600 for p in state.glob("bridge.sqlite*"))


@pytest.mark.usefixtures("open_umask")
def test_virtual_mcu_flash_files_are_0600(tmp_path: Path, tiny: Layout) -> None:
    path = tmp_path / "flash.bin"
    with Flash.for_layout(tiny, path):  # what fota-vmcu --flash and fota-boot --flash open
        pass
    assert mode_of(path) == 0o600
