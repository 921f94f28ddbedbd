"""The reliability campaigns (``python -m reliability``) at their ``--quick`` size.

Each campaign checks its own safety invariants and returns what broke; these tests run the
small size and assert that nothing did, plus the counts that show each campaign really
reached what it claims to cover.  Times are never asserted.  Also here: the device flow
against a reset request lost on the line, which the faulty-line campaign can only meet
by chance.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from bootloader.formats.layout import load_board
from harness.procs import find_mosquitto
from host_bridge.device import DeviceUpdater, Outcome, UpdateOptions
from host_bridge.image.prepare import PreparedImage, prepare
from host_bridge.image.sign import SigningParams, sign_payload
from reliability import crashes, infra, link, powerloss
from reliability.common import firmware_payload
from reliability.inproc import CutFlash, Device, FakeClock, is_reset


def needs_mosquitto(fn: Any) -> Any:
    """These campaigns need a real broker: fail (never skip) with the fix when it is missing."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if find_mosquitto() is None:
            pytest.fail("mosquitto is not installed: apt-get install mosquitto (.ci/run does it)")
        return fn(*args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    return wrapper


def test_faulty_line_never_boots_a_bad_image_and_always_ends_cleanly(tmp_path: Path) -> None:
    res = link.run(tmp_path, quick=True)
    assert res.violations == []
    clean, faulty = res.data["clean"], res.data["faulty"]
    assert clean.completed == len(clean.transfers) == 3
    assert faulty.transfers, "no flow ran on the faulty line"
    assert {t.status for t in faulty.transfers} <= {"confirmed", "reverted", "failed"}
    assert faulty.corrupt_boots == [] and faulty.invalid_slot0 == []
    assert faulty.counters.get("corrupted", 0) > 0  # the line really was faulty


def test_power_loss_at_every_flash_operation(tmp_path: Path) -> None:
    res = powerloss.run(tmp_path, quick=True)
    assert res.violations == []
    by_variant = {v.variant: v for v in res.data["variants"]}
    confirm, revert = by_variant["confirm"], by_variant["revert"]
    for phase in ("upload", "pending write", "swap", "confirm"):
        assert confirm.cuts[phase] > 0, f"no cut point in the {phase} phase"
    assert revert.cuts["revert"] > 0
    for v in (confirm, revert):
        assert sum(v.cuts.values()) == v.clean_ops  # every operation was a cut point


@needs_mosquitto
def test_crashes_of_the_device_and_of_the_bridge(tmp_path: Path) -> None:
    res = crashes.run(tmp_path, quick=True)
    assert res.violations == []
    dk = res.data["device_kills"]
    assert len(dk.kills) == 3 and dk.status == "confirmed" and dk.test_boots == 1
    kills = res.data["bridge_kills"]
    assert kills, "the bridge was never killed"
    assert all(k.status == "SUCCEEDED" and len(k.test_boots) == 1 for k in kills)


@needs_mosquitto
def test_broker_restart_dropped_and_expired_downloads(tmp_path: Path) -> None:
    res = infra.run(tmp_path, quick=True)
    assert res.violations == []
    assert [r.status for r in res.data["broker"]] == ["SUCCEEDED"]
    downloads = {d.label: d for d in res.data["downloads"]}
    assert all(d.ok for d in downloads.values())
    assert downloads["dropped 1"].cuts > 1
    assert downloads["expired (server 403)"].refreshes == 1
    assert downloads["expired (bridge clock)"].refreshes == 1


# -- a reset lost on the line ------------------------------------------------------------------


def _images(on_boot: str) -> tuple[PreparedImage, PreparedImage]:
    params = SigningParams.from_layout(load_board("tiny"))
    old = sign_payload(firmware_payload(3000, "old"), None, "1.0.0", params)
    new = sign_payload(firmware_payload(3000, f"new-{on_boot}", on_boot), None, "2.0.0", params)
    return prepare(old), prepare(new)


def _update_losing_reset(on_boot: str, lose: int, what: str) -> tuple[Outcome, Device, int]:
    """The device flow on an in-process device whose ``lose``-th reset request (or its
    reply, ``what="reply"``) is lost; returns the outcome, the device, resets received."""
    layout = load_board("tiny")
    old, new = _images(on_boot)
    flash = CutFlash(layout)
    flash.area(layout.slot0).write(0, old.data + b"\xff" * (-len(old.data) % 8))
    seen = [0]

    def lost(packet: bytes) -> bool:
        if not is_reset(packet):
            return False
        seen[0] += 1
        return seen[0] == lose

    device = Device(
        layout,
        flash,
        drop=lost if what == "request" else None,
        drop_reply=lost if what == "reply" else None,
    )
    clock = FakeClock()
    options = UpdateOptions(confirm_timeout_s=2.0, boot_timeout_s=2.0, poll_s=0.1)
    outcome = DeviceUpdater(device.client(), options, sleep=clock.sleep, clock=clock.clock).update(
        new
    )
    return outcome, device, seen[0]


def test_a_lost_test_reset_is_sent_again_not_reported_as_a_revert() -> None:
    """The old image still running and the new one still pending means the reset never
    arrived: the flow used to report "reverted" and leave the image pending, to be
    test-booted at some later, unrelated reset."""
    outcome, device, resets = _update_losing_reset("confirm", 1, "request")
    assert (outcome.status, outcome.version) == ("confirmed", "2.0.0"), outcome
    assert resets == 2
    assert [b.swap_type for b in device.boots] == ["none", "test"]
    assert "resetting again" in " ".join(outcome.log)


def test_a_lost_reverting_reset_is_sent_again() -> None:
    outcome, device, resets = _update_losing_reset("stay-unconfirmed", 2, "request")
    assert (outcome.status, outcome.version) == ("reverted", "1.0.0"), outcome
    assert resets == 3
    assert [b.swap_type for b in device.boots] == ["none", "test", "revert"]


def test_a_reset_whose_reply_is_lost_is_not_sent_again() -> None:
    """The device reset (the reply died with it): a second reset could revert the image on
    trial before it confirms itself, so there must be none."""
    outcome, device, resets = _update_losing_reset("confirm", 1, "reply")
    assert (outcome.status, outcome.version) == ("confirmed", "2.0.0"), outcome
    assert resets == 1
    assert [b.swap_type for b in device.boots] == ["none", "test"]
