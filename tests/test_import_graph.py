"""The packages depend on each other one way: a lower layer never imports a higher one.

The layers (docs/ARCHITECTURE.md draws them), lowest first; a module may import its own room
and any lower layer, never a sibling room of the same layer or anything above:

    0  mcu                       runs on the device; imports nothing of the host
    1  fota_common               errors, the CLI runner, TLS file checks
    2  bootloader.formats        MCUboot image codec, keys, verification, board layouts
    3  bootloader.sim            the simulator: flash, MCUboot model, virtual MCU, power cuts
       bootloader.overlay        Zephyr devicetree overlays from the layouts
       host_bridge.redact, logs (host_bridge.urls just above redact)
       localjobs                 the local AWS IoT Jobs service
    4  host_bridge.jobs          job documents and the Jobs MQTT client
       host_bridge.store         the gateway's SQLite state
    5  host_bridge.image         download, verify, sign (takes a job's FirmwareJob)
       host_bridge.smp           SMP client, link, upload
    6  host_bridge.flow_events   the update flow's vocabulary
    7  host_bridge.flow          the update flow (no I/O)
    8  host_bridge.device        the flow's driver; host_bridge.config
    9  host_bridge.reporting     Jobs status reports
   10  host_bridge.pipeline      one job from document to outcome
   11  host_bridge.daemon        the daemon's lifecycle
   12  host_bridge.commands      the ``fota-bridge`` commands
   13  host_bridge.cli           ``fota-bridge``: parser and entry point
   19  harness                   processes, ports, ptys, mosquitto, virtual MCUs
   20  reliability, tools, bench what runs on the harness

Every import counts, at module level or inside a function.  The oracle is the layer table
above, written from the architecture, not from the code.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
PACKAGES: Final = ("mcu", "fota_common", "bootloader", "host_bridge", "localjobs")
HARNESS: Final = ("harness", "reliability", "tools", "bench")

# room (module prefix) -> layer
LAYERS: Final[dict[str, float]] = {
    "mcu": 0,
    "fota_common": 1,
    "bootloader.formats": 2,
    "bootloader.sim": 3,
    "bootloader.overlay": 3,
    "host_bridge.redact": 3,
    "host_bridge.urls": 3.5,
    "host_bridge.logs": 3,
    "localjobs": 3,
    "host_bridge.jobs": 4,
    "host_bridge.store": 4,
    "host_bridge.image": 5,
    "host_bridge.smp": 5,
    "host_bridge.flow_events": 6,
    "host_bridge.flow": 7,
    "host_bridge.device": 8,
    "host_bridge.config": 8,
    "host_bridge.reporting": 9,
    "host_bridge.pipeline": 10,
    "host_bridge.daemon": 11,
    "host_bridge.commands": 12,
    "host_bridge.cli": 13,
    "harness": 19,
    "reliability": 20,
    "tools": 20,
    "bench": 20,
}
# Allowed upward edges, each with its reason.
EXCEPTIONS: Final[dict[tuple[str, str], str]] = {
    ("host_bridge.cli", "localjobs"): "fota-bridge jobs, when the optional package is installed",
}
# A room's __init__ may name nothing but itself; the package roots are not rooms.
ROOTS: Final = frozenset({"bootloader", "host_bridge"})


def room(module: str) -> str | None:
    best = None
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import of the project's own packages in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names = [f"{base}.{node.module}" if node.module else base]
            else:
                mod = node.module or ""
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                names = [
                    f"{mod}.{a.name}" if _is_module(f"{mod}.{a.name}") else mod for a in node.names
                ]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in PACKAGES + HARNESS]
    return found


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def sources() -> list[Path]:
    out: list[Path] = []
    for top in PACKAGES + HARNESS:
        out += [p for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(out)


def violations() -> list[str]:
    bad = []
    for path in sources():
        name = module_name(path)
        if name in ROOTS:
            continue
        here = room(name)
        assert here is not None, f"{name} is in no room of the layer table: add it"
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for line, target in imports(path, package):
            if target in ROOTS:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports the package root {target}")
                continue
            there = room(target)
            assert there is not None, f"{name} imports {target}, which is in no room"
            if there == here or LAYERS[there] < LAYERS[here]:
                continue
            if (here, there) in EXCEPTIONS:
                continue
            bad.append(
                f"{path.relative_to(ROOT)}:{line} ({here}, layer {LAYERS[here]}) imports "
                f"{target} ({there}, layer {LAYERS[there]})"
            )
    return bad


def test_no_layer_imports_a_higher_or_sibling_one() -> None:
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A codec that reaches up into the gateway is caught, at module level and in a function.
    probe = ROOT / "bootloader" / "formats" / "_probe_import_graph.py"
    probe.write_text(
        "from host_bridge.daemon import Bridge\n\ndef f():\n    import localjobs.store\n"
    )
    try:
        found = violations()
    finally:
        probe.unlink()
    assert any("_probe_import_graph.py:1" in v and "host_bridge.daemon" in v for v in found)
    assert any("_probe_import_graph.py:4" in v and "localjobs" in v for v in found)


def test_the_device_code_imports_only_itself() -> None:
    for path in (ROOT / "mcu").rglob("*.py"):
        for line, target in imports(path, module_name(path).rpartition(".")[0]):
            assert target.split(".")[0] == "mcu", f"{path}:{line} imports {target}"
