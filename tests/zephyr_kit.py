"""Where the Zephyr/MCUboot configuration lives, shared by the Zephyr tests."""

from __future__ import annotations

from pathlib import Path

from bootloader import overlay

ZEPHYR_DIR = Path(overlay.__file__).resolve().parent / "zephyr"
