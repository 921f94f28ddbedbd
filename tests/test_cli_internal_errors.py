"""The safety net of every command line: an unexpected exception inside any command is one
"internal error" line on stderr, exit 2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest
from cli_kit import EXIT_ERROR

from bootloader.sim import cli as boot_cli
from bootloader.sim import vmcu
from host_bridge import cli as bridge_cli
from localjobs import cli as jobs_cli
from tools import faultlink, mcu_bundle


# -- the safety net: an unexpected exception is one line, exit 2 ---------------------------------
class Boom(RuntimeError):
    pass


def boom(*args: Any, **kwargs: Any) -> NoReturn:
    raise Boom("kaboom")


def _bridge(mp: pytest.MonkeyPatch, tmp: Path) -> int:
    mp.setattr(bridge_cli, "cmd_reset", boom)
    return bridge_cli.main(["reset", "--port", str(tmp / "no-such-tty")])


def _jobs(mp: pytest.MonkeyPatch, tmp: Path) -> int:
    mp.setattr(jobs_cli, "cmd_list", boom)
    return jobs_cli.main_jobs(["list", "--state-dir", str(tmp)])


def _boot(mp: pytest.MonkeyPatch, tmp: Path) -> int:
    mp.setattr(boot_cli, "cmd_boards", boom)
    return boot_cli.main(["boards"])


def _vmcu(mp: pytest.MonkeyPatch, tmp: Path) -> int:
    mp.setattr(vmcu, "VirtualMcu", boom)
    return vmcu.main(["--board", "tiny", "--flash", str(tmp / "f.bin"), "--link", str(tmp / "l")])


def _faultlink(mp: pytest.MonkeyPatch, tmp: Path) -> int:
    mp.setattr(faultlink, "FaultLink", boom)
    return faultlink.main(["--upstream", str(tmp / "u"), "--link", str(tmp / "l")])


def _bundle(mp: pytest.MonkeyPatch, tmp: Path) -> int:
    mp.setattr(mcu_bundle, "build", boom)
    return mcu_bundle.main(["--out", str(tmp / "out")])


@pytest.mark.parametrize(
    ("prog", "call"),
    [
        ("fota-bridge", _bridge),
        ("fota-bridge jobs", _jobs),
        ("fota-boot", _boot),
        ("fota-vmcu", _vmcu),
        ("faultlink", _faultlink),
        ("mcu-bundle", _bundle),
    ],
)
def test_an_unexpected_exception_is_one_internal_error_line(
    prog: str,
    call: Callable[[pytest.MonkeyPatch, Path], int],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = call(monkeypatch, tmp_path)
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert err == f"{prog}: internal error: Boom: kaboom (please report)\n"
