"""Shared fixtures: boards and imgtool-made images (built once per test session)."""

from __future__ import annotations

import pytest

from bootloader.layout import Layout, load_board
from bootloader.testimages import make_pair


@pytest.fixture(scope="session")
def tiny() -> Layout:
    return load_board("tiny")


@pytest.fixture(scope="session")
def tiny_pair(tiny: Layout) -> tuple[bytes, bytes]:
    """v1.0.0 and v2.0.0, hash-only images signed by imgtool for the tiny board."""
    return make_pair(tiny)
