"""Every command line, given bad paths, bad files and bad numbers, as a shell sees it.

Each row runs one command as a process and checks what the project promises for every
failure: the documented exit code (2 for bad input or a fatal error), exactly one non-empty
line on stderr that names the offending path or value, and no traceback anywhere.  Paths that
even root cannot use are built from a regular file (``FILE/x``: "Not a directory"), a
directory where a file belongs, ``/dev/null`` where a seekable file belongs, and files with
the wrong contents.  Nothing here reaches a broker or a device: ``run`` fails at its state
directory or its TLS files before it connects, and ports are paths that do not exist.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from cli_kit import (
    BOOT,
    BRIDGE,
    BUNDLE,
    CREATE,
    FAULTLINK,
    JOBS,
    NO_TTY,
    OVERLAY,
    PORT,
    RELIABILITY,
    REPO_ROOT,
    SERVE,
    UPLOAD_RAW,
    VM,
    VMCU,
    Row,
    both,
    bridge_toml,
    run,
    state_db_is_a_directory,
    state_db_is_garbage,
)

ROWS: Final = [
    # -- fota-bridge run: the state directory, its database, the TLS and key files --------------
    Row(
        "run-state-dir-under-a-file",
        (*BRIDGE, "run", "--config", "{d}/bridge.toml"),
        ("{d}/file/state",),
        setup=bridge_toml("{d}/file/state"),
    ),
    Row(
        "run-state-dir-is-a-file",
        (*BRIDGE, "run", "--config", "{d}/bridge.toml"),
        ("{d}/file",),
        setup=bridge_toml("{d}/file"),
    ),
    Row(
        "run-state-db-is-a-directory",
        (*BRIDGE, "run", "--config", "{d}/bridge.toml"),
        ("{d}/state/bridge.sqlite",),
        setup=both(bridge_toml("{d}/state"), state_db_is_a_directory),
    ),
    Row(
        "run-state-db-is-garbage",
        (*BRIDGE, "run", "--config", "{d}/bridge.toml"),
        ("{d}/state/bridge.sqlite",),
        setup=both(bridge_toml("{d}/state"), state_db_is_garbage),
    ),
    Row(
        "run-check-broker-ca-is-a-directory",
        (*BRIDGE, "run", "--check", "--config", "{d}/bridge.toml"),
        ("{d}/dir",),
        setup=bridge_toml("{d}/state", broker='ca = "{d}/dir"'),
    ),
    Row(
        "run-broker-ca-is-not-a-certificate",
        (*BRIDGE, "run", "--config", "{d}/bridge.toml"),
        ("{d}/file",),
        setup=bridge_toml("{d}/state", broker='ca = "{d}/file"'),
    ),
    Row(
        "run-check-signing-key-is-not-a-key",
        (*BRIDGE, "run", "--check", "--config", "{d}/bridge.toml"),
        ("{d}/file",),
        setup=bridge_toml("{d}/state", extra='[signing]\nkey = "{d}/file"'),
    ),
    Row(
        "run-download-ca-is-a-directory",
        (*BRIDGE, "run", "--check", "--config", "{d}/bridge.toml"),
        ("{d}/dir",),
        setup=bridge_toml("{d}/state", extra='[download]\nca = "{d}/dir"'),
    ),
    Row("run-config-is-a-directory", (*BRIDGE, "run", "--config", "{d}/dir"), ("{d}/dir",)),
    Row("run-config-is-not-toml", (*BRIDGE, "run", "--config", "{d}/file"), ("{d}/file",)),
    # -- fota-bridge: keys, signing and images --------------------------------------------------
    Row(
        "sign-key-is-a-directory",
        (*BRIDGE, "sign", "{d}/file", "{d}/out.img", "--version", "1.0.0", "--key", "{d}/dir"),
        ("{d}/dir",),
    ),
    Row(
        "upload-key-is-a-directory",
        (*UPLOAD_RAW, *PORT, "--key", "{d}/dir"),
        ("{d}/dir",),
    ),
    Row(
        "sign-negative-slot-size",
        (*BRIDGE, "sign", "{d}/file", "{d}/out.img", "--version", "1.0.0", "--slot-size", "-5"),
        ("--slot-size", "-5"),
    ),
    Row(
        "sign-output-under-a-file",
        (*BRIDGE, "sign", "{d}/file", "{d}/file/out.img", "--version", "1.0.0"),
        ("{d}/file/out.img",),
    ),
    Row(
        "sign-without-version",
        (*BRIDGE, "sign", "{d}/file", "{d}/out.img"),
        ("--version",),
    ),
    Row("keys-new-under-a-file", (*BRIDGE, "keys", "new", "{d}/file/k.pem"), ("{d}/file/k.pem",)),
    Row(
        "upload-truncated-image",
        (*BRIDGE, "upload", "{d}/truncated.img", "--board", "tiny", *PORT),
        ("{d}/truncated.img",),
    ),
    Row(
        "upload-image-is-a-directory",
        (*BRIDGE, "upload", "{d}/dir", "--board", "tiny", *PORT),
        ("{d}/dir",),
    ),
    # -- fota-bridge: ports and numbers ---------------------------------------------------------
    Row("state-port-missing", (*BRIDGE, "state", *PORT), (NO_TTY,)),
    Row(
        "state-port-is-a-regular-file",
        (*BRIDGE, "state", "--port", "{d}/file", "--timeout", "0.2"),
        ("{d}/file",),
    ),
    Row(
        "state-port-is-a-directory",
        (*BRIDGE, "state", "--port", "{d}/dir", "--timeout", "0.2"),
        ("{d}/dir",),
    ),
    Row(
        "update-port-missing",
        (*BRIDGE, "update", "{d}/v1.img", "--board", "tiny", *PORT),
        (NO_TTY,),
    ),
    Row("state-baud-zero", (*BRIDGE, "state", *PORT, "--baud", "0"), ("--baud", "0")),
    Row("state-baud-negative", (*BRIDGE, "state", *PORT, "--baud", "-5"), ("--baud", "-5")),
    Row("state-baud-not-a-number", (*BRIDGE, "state", *PORT, "--baud", "fast"), ("fast",)),
    Row(
        "state-timeout-zero",
        (*BRIDGE, "state", "--port", NO_TTY, "--timeout", "0"),
        ("--timeout", "0"),
    ),
    Row(
        "reset-timeout-negative",
        (*BRIDGE, "reset", "--port", NO_TTY, "--timeout", "-1"),
        ("--timeout", "-1"),
    ),
    Row(
        "confirm-timeout-nan",
        (*BRIDGE, "confirm", "--port", NO_TTY, "--timeout", "nan"),
        ("--timeout", "nan"),
    ),
    Row(
        "upload-window-zero",
        (*BRIDGE, "upload", "{d}/v1.img", "--board", "tiny", *PORT, "--window", "0"),
        ("--window", "0"),
    ),
    Row(
        "upload-buf-size-zero",
        (*BRIDGE, "upload", "{d}/v1.img", "--board", "tiny", *PORT, "--buf-size", "0"),
        ("--buf-size", "0"),
    ),
    Row(
        "update-confirm-timeout-negative",
        (*BRIDGE, "update", "{d}/v1.img", "--board", "tiny", *PORT, "--confirm-timeout", "-1"),
        ("--confirm-timeout", "-1"),
    ),
    Row(
        "update-boot-timeout-nan",
        (*BRIDGE, "update", "{d}/v1.img", "--board", "tiny", *PORT, "--boot-timeout", "nan"),
        ("--boot-timeout", "nan"),
    ),
    Row("unknown-command", (*BRIDGE, "frobnicate"), ("frobnicate",)),
    # -- fota-bridge jobs ----------------------------------------------------------------------
    Row(
        "jobs-state-dir-under-a-file",
        (*BRIDGE, "jobs", "list", "--state-dir", "{d}/file/jobs"),
        ("{d}/file/jobs",),
    ),
    Row(
        "jobs-state-dir-is-a-file",
        (*BRIDGE, "jobs", "list", "--state-dir", "{d}/file"),
        ("{d}/file",),
    ),
    Row(
        "jobs-create-document-missing",
        (*CREATE, "--document", "{d}/absent.json"),
        ("{d}/absent.json",),
    ),
    Row(
        "jobs-create-document-not-json",
        (*CREATE, "--document", "{d}/file"),
        ("{d}/file",),
    ),
    Row(
        "jobs-create-image-is-a-directory",
        (*CREATE, "--image", "{d}/dir", "--version", "1.0.0"),
        ("{d}/dir",),
    ),
    Row(
        "jobs-create-http-port-out-of-range",
        (*CREATE, "--image", "{d}/v1.img", "--version", "1.0.0", "--http-port", "70000"),
        ("--http-port", "70000"),
    ),
    Row(
        "jobs-serve-http-port-out-of-range",
        (*BRIDGE, "jobs", "serve", "--broker", "127.0.0.1:1", "--http-port", "70000"),
        ("--http-port", "70000"),
    ),
    Row(
        "jobs-serve-http-port-negative",
        (*BRIDGE, "jobs", "serve", "--broker", "127.0.0.1:1", "--http-port", "-1"),
        ("--http-port", "-1"),
    ),
    Row(
        "jobs-serve-ca-missing",
        (*SERVE, "--ca", "{d}/absent-ca.pem"),
        ("{d}/absent-ca.pem",),
    ),
    Row(
        "jobs-serve-ca-is-not-a-certificate",
        (*SERVE, "--ca", "{d}/file"),
        ("{d}/file",),
    ),
    Row(
        "jobs-serve-poll-interval-zero",
        (*SERVE, "--poll-interval", "0"),
        ("--poll-interval", "0"),
    ),
    Row(
        "jobs-serve-url-expires-negative",
        (*SERVE, "--url-expires", "-5"),
        ("--url-expires", "-5"),
    ),
    Row(
        "jobs-alone-state-dir-under-a-file",
        (*JOBS, "list", "--state-dir", "{d}/file/jobs"),
        ("{d}/file/jobs",),
    ),
    Row("jobs-alone-missing-arguments", (*JOBS, "create"), ("--thing",)),
    # -- fota-boot -----------------------------------------------------------------------------
    Row(
        "boot-flash-under-a-file",
        (*BOOT, "--board", "tiny", "--flash", "{d}/file/flash.bin", "state"),
        ("{d}/file/flash.bin",),
    ),
    Row(
        "boot-flash-is-a-directory",
        (*BOOT, "--board", "tiny", "--flash", "{d}/dir", "state"),
        ("{d}/dir",),
    ),
    Row(
        "boot-flash-is-dev-null",
        (*BOOT, "--board", "tiny", "--flash", "/dev/null", "state"),
        ("/dev/null",),
    ),
    Row(
        "boot-power-cut-at-zero",
        (*BOOT, "--board", "tiny", "--flash", "{d}/flash.bin", "boot", "--power-cut-at", "0"),
        ("--power-cut-at", "0"),
    ),
    Row(
        "boot-power-cut-at-negative",
        (*BOOT, "--board", "tiny", "--flash", "{d}/flash.bin", "boot", "--power-cut-at", "-1"),
        ("--power-cut-at", "-1"),
    ),
    Row(
        "boot-load-missing-arguments",
        (*BOOT, "--board", "tiny", "--flash", "{d}/flash.bin", "load"),
        ("slot",),
    ),
    Row(
        "boot-board-is-a-directory",
        (*BOOT, "--board", "{d}/dir", "--flash", "{d}/flash.bin", "state"),
        ("{d}/dir",),
    ),
    Row(
        "boot-dump-under-a-file",
        (*BOOT, "--board", "tiny", "--flash", "{d}/flash.bin", "dump", "1", "{d}/file/out"),
        ("{d}/file/out",),
    ),
    Row(
        "boot-inspect-key-is-not-a-key",
        (*BOOT, "inspect", "{d}/v1.img", "--key", "{d}/file"),
        ("{d}/file",),
    ),
    # -- fota-vmcu -----------------------------------------------------------------------------
    Row(
        "vmcu-flash-under-a-file",
        (*VMCU, "--board", "tiny", "--flash", "{d}/file/f.bin", "--link", "{d}/tty"),
        ("{d}/file/f.bin",),
    ),
    Row(
        "vmcu-link-under-a-file",
        (*VMCU, "--board", "tiny", "--flash", "{d}/f.bin", "--link", "{d}/file/tty"),
        ("{d}/file/tty",),
    ),
    Row(
        "vmcu-key-is-not-a-key",
        (*VM, "--key", "{d}/file"),
        ("{d}/file",),
    ),
    Row(
        "vmcu-key-missing",
        (*VM, "--key", "{d}/absent.pem"),
        ("{d}/absent.pem",),
    ),
    Row(
        "vmcu-load-too-large",
        (*VM, "--load", "{d}/big.bin"),
        ("{d}/big.bin",),
    ),
    Row(
        "vmcu-load-is-a-directory",
        (*VM, "--load", "{d}/dir"),
        ("{d}/dir",),
    ),
    Row(
        "vmcu-baud-negative",
        (*VM, "--baud", "-5"),
        ("--baud", "-5"),
    ),
    Row(
        "vmcu-buf-count-zero",
        (*VM, "--buf-count", "0"),
        ("--buf-count", "0"),
    ),
    # -- python -m tools.faultlink -------------------------------------------------------------
    Row(
        "faultlink-upstream-missing",
        (*FAULTLINK, "--upstream", "{d}/absent-tty", "--link", "{d}/tty"),
        ("{d}/absent-tty",),
    ),
    Row(
        "faultlink-upstream-is-a-regular-file",
        (*FAULTLINK, "--upstream", "{d}/file", "--link", "{d}/tty"),
        ("{d}/file",),
    ),
    Row(
        "faultlink-link-under-a-file",
        (*FAULTLINK, "--upstream", "{pty}", "--link", "{d}/file/tty"),
        ("{d}/file/tty",),
    ),
    Row(
        "faultlink-drop-above-one",
        (*FAULTLINK, "--upstream", "{pty}", "--link", "{d}/tty", "--drop", "2"),
        ("--drop", "2"),
    ),
    Row(
        "faultlink-negative-delay",
        (*FAULTLINK, "--upstream", "{pty}", "--link", "{d}/tty", "--delay-ms", "-5"),
        ("--delay-ms", "-5"),
    ),
    # -- python -m tools.mcu_bundle, -m reliability, -m bootloader.overlay ---------------------
    Row(
        "bundle-out-under-a-file",
        (*BUNDLE, "--sources", "--out", "{d}/file/bundle"),
        ("{d}/file/bundle",),
    ),
    Row("bundle-out-is-a-file", (*BUNDLE, "--sources", "--out", "{d}/file"), ("{d}/file",)),
    Row(
        "reliability-out-under-a-file",
        (*RELIABILITY, "--quick", "--only", "link", "--out", "{d}/file/REPORT.md"),
        ("{d}/file/REPORT.md",),
    ),
    Row("overlay-unknown-board", (*OVERLAY, "--board", "no-such-board"), ("no-such-board",)),
    Row("overlay-dir-is-a-file", (*OVERLAY, "--write", "--dir", "{d}/file"), ("{d}/file",)),
]


@pytest.fixture(scope="module")
def pty_path() -> Iterator[str]:
    """A live serial device (a pty slave) for the commands that must get past opening one."""
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture
def scratch(tmp_path: Path, tiny_pair: tuple[bytes, bytes]) -> Path:
    """FILE (text, not TOML/JSON/PEM), DIR, a good image, a truncated one, and one too big."""
    (tmp_path / "file").write_text("just some text\n")
    (tmp_path / "dir").mkdir()
    v1 = tiny_pair[0]
    (tmp_path / "v1.img").write_bytes(v1)
    (tmp_path / "truncated.img").write_bytes(v1[:40])
    (tmp_path / "big.bin").write_bytes(bytes(0x1400 + 512))  # tiny's slot0 is 0x1400 bytes
    (tmp_path / "xdg").mkdir()
    return tmp_path


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_one_line_and_an_exit_code(row: Row, scratch: Path, pty_path: str) -> None:
    if row.setup is not None:
        row.setup(scratch)
    argv = tuple(a.format(d=scratch, pty=pty_path) for a in row.argv)
    proc = run(argv, REPO_ROOT, scratch / "xdg")
    seen = f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
    assert "Traceback" not in proc.stdout + proc.stderr, seen
    assert proc.returncode == row.code, seen
    lines = proc.stderr.removesuffix("\n").split("\n")
    assert len(lines) == 1 and lines[0].strip(), seen
    for name in row.names:
        assert name.format(d=scratch) in lines[0], seen
