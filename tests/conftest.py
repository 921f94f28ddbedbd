"""Shared fixtures: boards and imgtool-made images (built once per test session)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings

from bootloader.formats.layout import Layout, load_board
from bootloader.sim.testimages import make_pair


@pytest.fixture(scope="session")
def tiny() -> Layout:
    return load_board("tiny")


@pytest.fixture(scope="session")
def tiny_pair(tiny: Layout) -> tuple[bytes, bytes]:
    """v1.0.0 and v2.0.0, hash-only images signed by imgtool for the tiny board."""
    return make_pair(tiny)


# -- fuzz profiles (tests/test_fuzz.py) ---------------------------------------------------------
# "fuzz" is what `just test` runs: a couple of hundred cases per parser, under a minute in all.
# FOTA_FUZZ_PROFILE=reliability runs 10,000 cases per parser (see tests/fuzz_kit.py).
# Registered here, not loaded: the other property tests keep their own settings.
settings.register_profile(
    "fuzz",
    max_examples=200,
    deadline=timedelta(seconds=2),  # an example this slow is a hang in the making
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "reliability",
    settings.get_profile("fuzz"),
    max_examples=10_000,
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many event sequences the update flow's fault matrix covered (test_flow_matrix)."""
    import sys

    matrix = sys.modules.get("test_flow_matrix")
    covered = getattr(matrix, "COVERED", None)
    if covered:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(matrix.OUTCOMES.items()))  # type: ignore[union-attr]
        parts = ", ".join(f"{k} {v}" for k, v in sorted(covered.items()))
        terminalreporter.write_line(
            f"update flow matrix: {sum(covered.values())} event sequences ({parts}); "
            f"outcomes: {outcomes}"
        )
