"""The update flow against every sequence of lost, duplicated and late messages up to a bound.

Each run drives the bridge's DeviceUpdater (over the state machine of host_bridge.flow)
against the in-process device of ``flow_rig``: the mcu/ receiver over a modelled flash,
MCUboot's boot at every reset, and firmware of a chosen behaviour.  After each run the
outcome is checked against the device's truth (what runs, whether it is confirmed, what the
next reset boots) by ``flow_rig.violations``.  The number of sequences covered is reported
at the end of the test session.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Final

import pytest
from flow_rig import (
    BEHAVIOURS,
    FAULTS,
    KINDS,
    OPTIONS,
    CutFlash,
    FakeClock,
    FlowDevice,
    Run,
    fresh_flash,
    images,
    layout,
    run_flow,
    violations,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fota_common.errors import DeviceError
from host_bridge.flow_events import UpdateOptions
from host_bridge.smp.upload import upload

COVERED: Counter[str] = Counter()  # sequences run, by matrix; printed by conftest
OUTCOMES: Counter[str] = Counter()


def check(run: Run, what: str, matrix: str) -> None:
    COVERED[matrix] += 1
    OUTCOMES[run.outcome.status] += 1
    bad = violations(run)
    assert not bad, f"{what}: {bad}; outcome {run.outcome.as_dict()}; log {run.outcome.log}"


def old_hash() -> str:
    return images()[0].hash.hex()


def new_hash() -> str:
    return images()[1].hash.hex()


# -- the cases named in the issue, one by one --------------------------------------------------


def test_every_reset_lost_fails_with_the_truth_and_nothing_stays_pending() -> None:
    run = run_flow("confirm", schedule={"reset": ("lost",) * OPTIONS.reset_attempts})
    check(run, "all resets lost", "named")
    assert run.outcome.status == "failed"
    assert "never reset" in run.outcome.reason
    assert "MCUboot reverted" not in run.outcome.reason
    assert run.truth.running == old_hash() and run.truth.next_boot == old_hash()
    assert not run.truth.pending
    assert run.device.seen["reset"] == OPTIONS.reset_attempts
    assert run.outcome.version == "1.0.0"


def test_a_device_that_refuses_to_erase_a_pending_slot_is_reported_as_such() -> None:
    """Stock Zephyr without CONFIG_MCUMGR_GRP_IMG_ALLOW_ERASE_PENDING keeps the image; the
    job must say that it will test-boot at the next reset, not that anything reverted."""
    run = run_flow(
        "confirm",
        schedule={"reset": ("lost",) * OPTIONS.reset_attempts},
        allow_erase_pending=False,
    )
    check(run, "erase refused", "named")
    assert run.outcome.status == "failed"
    assert "never reset" in run.outcome.reason and "refused to erase" in run.outcome.reason
    assert run.truth.next_boot == new_hash()


def test_firmware_that_confirms_just_after_the_deadline_is_a_success() -> None:
    """The self-test ends just as the bridge's reverting reset arrives: the image stays."""
    run = run_flow("late")
    check(run, "late confirm", "named")
    assert run.outcome.status == "confirmed", run.outcome.reason
    assert run.truth.running == new_hash() and run.truth.confirmed


def test_bridge_policy_with_a_device_that_never_applies_the_confirm_ends_at_the_deadline() -> None:
    run = run_flow("never", policy="bridge", ignore_confirm=True)
    check(run, "confirm acknowledged, never applied", "named")
    assert run.outcome.status == "reverted"
    assert "acknowledged" in run.outcome.reason
    # one confirm per poll until the deadline, not a loop without sleep
    most = OPTIONS.confirm_timeout_s / OPTIONS.poll_s + 2
    assert 1 <= run.device.seen["confirm"] <= most
    assert run.outcome.seconds <= OPTIONS.confirm_timeout_s + 2 * OPTIONS.boot_timeout_s


def test_a_hash_mismatch_at_the_end_of_the_upload_fails_and_marks_nothing() -> None:
    run = run_flow("confirm", mismatch=True)
    check(run, "match: false", "named")
    assert run.outcome.status == "failed"
    assert "does not match" in run.outcome.reason
    assert run.device.seen["mark"] == 0 and run.device.seen["reset"] == 0
    assert run.truth.next_boot == old_hash() and not run.truth.pending
    assert run.outcome.version == "1.0.0"


def test_a_revert_reset_that_never_arrives_says_the_next_reset_reverts() -> None:
    run = run_flow(
        "never",
        schedule={"reset": ("ok",) + ("lost",) * OPTIONS.reset_attempts},
    )
    check(run, "revert resets lost", "named")
    assert run.outcome.status == "failed"
    assert "next reset reverts to 1.0.0" in run.outcome.reason
    assert run.truth.running == new_hash() and not run.truth.confirmed
    assert run.truth.next_boot == old_hash()


def test_a_reset_that_takes_effect_late_is_not_repeated() -> None:
    """The device answers one more request before it resets: the grace period covers it,
    and only one reset is sent."""
    run = run_flow("slow", schedule={"reset": ("late",)})
    check(run, "late reset", "named")
    assert run.outcome.status == "confirmed"
    assert run.device.seen["reset"] == 1


# -- exhaustive matrices -----------------------------------------------------------------------

POLICIES: Final = ("device", "bridge")


def test_matrix_resets() -> None:
    """Every fault on each of the first three resets, every firmware, both policies."""
    n = 0
    for faults in itertools.product(FAULTS, repeat=3):
        for behaviour in BEHAVIOURS:
            for policy in POLICIES:
                run = run_flow(behaviour, policy, {"reset": faults})
                check(run, f"{behaviour}/{policy} reset={faults}", "resets")
                n += 1
    assert n == len(FAULTS) ** 3 * len(BEHAVIOURS) * len(POLICIES)


@pytest.mark.parametrize(
    ("behaviour", "policy"),
    [("confirm", "device"), ("never", "device"), ("never", "bridge"), ("crash", "device")],
)
def test_matrix_state_reads_and_test_mark(behaviour: str, policy: str) -> None:
    """Every fault on the first three image state reads and on the test mark."""
    for reads in itertools.product(FAULTS, repeat=3):
        for mark in FAULTS:
            run = run_flow(behaviour, policy, {"state": reads, "mark": (mark,)})
            check(run, f"{behaviour}/{policy} state={reads} mark={mark}", "reads+mark")


def test_matrix_bridge_confirms() -> None:
    """Every fault on the first three confirms of the bridge policy, every firmware."""
    for faults in itertools.product(FAULTS, repeat=3):
        for behaviour in BEHAVIOURS:
            for ignore in (False, True):
                run = run_flow(behaviour, "bridge", {"confirm": faults}, ignore_confirm=ignore)
                check(run, f"{behaviour} confirm={faults} ignore={ignore}", "confirms")


def test_matrix_clearing_an_image_whose_reset_never_arrived() -> None:
    """All resets lost, then every fault on the erase and the reads after it."""
    lost = ("lost",) * OPTIONS.reset_attempts
    # the reads before the erase are the polls of the grace periods: leave them alone
    polls = run_flow("confirm", schedule={"reset": lost}).device.seen["state"]
    for erase in itertools.product(FAULTS, repeat=2):
        for reads in itertools.product(FAULTS, repeat=2):
            for allow in (True, False):
                schedule = {"reset": lost, "erase": erase, "state": ("ok",) * (polls - 1) + reads}
                run = run_flow("confirm", schedule=schedule, allow_erase_pending=allow)
                check(run, f"erase={erase} reads={reads} allow={allow}", "erase")


# -- random longer sequences -------------------------------------------------------------------

schedules = st.fixed_dictionaries(
    {k: st.lists(st.sampled_from(FAULTS), max_size=8).map(tuple) for k in KINDS}
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schedule=schedules,
    behaviour=st.sampled_from(BEHAVIOURS),
    policy=st.sampled_from(POLICIES),
    ignore_confirm=st.booleans(),
    allow_erase_pending=st.booleans(),
    retries=st.sampled_from((0, 2)),
    link_attempts=st.integers(1, 3),
    reset_attempts=st.integers(1, 3),
)
def test_random_fault_sequences(
    schedule: dict[str, tuple[str, ...]],
    behaviour: str,
    policy: str,
    ignore_confirm: bool,
    allow_erase_pending: bool,
    retries: int,
    link_attempts: int,
    reset_attempts: int,
) -> None:
    opts = UpdateOptions(
        **{**OPTIONS.__dict__, "link_attempts": link_attempts, "reset_attempts": reset_attempts}
    )
    run = run_flow(
        behaviour,
        policy,
        schedule,
        ignore_confirm=ignore_confirm,
        allow_erase_pending=allow_erase_pending,
        retries=retries,
        options=opts,
    )
    check(run, f"{behaviour}/{policy} {schedule}", "random")


def test_without_faults_each_firmware_gets_its_expected_outcome() -> None:
    """Liveness: on a clean line the flow ends as the firmware deserves."""
    expected = {
        ("confirm", "device"): "confirmed",
        ("slow", "device"): "confirmed",
        ("late", "device"): "confirmed",
        ("never", "device"): "reverted",
        ("crash", "device"): "reverted",
        ("never", "bridge"): "confirmed",
    }
    for (behaviour, policy), status in expected.items():
        run = run_flow(behaviour, policy)
        check(run, f"{behaviour}/{policy}", "named")
        assert run.outcome.status == status, (behaviour, policy, run.outcome.reason)


def test_a_slot_needed_for_a_revert_is_never_erased() -> None:
    """img_mgmt_slot_in_use refuses to erase a revert slot even with
    CONFIG_MCUMGR_GRP_IMG_ALLOW_ERASE_PENDING: after the test boot slot 1 holds the old image,
    the only way back."""
    flash = CutFlash(layout())
    flash.restore(fresh_flash())
    dev = FlowDevice(
        layout=layout(), flash=flash, clock=FakeClock(), new_hash=new_hash(), behaviour="never"
    )
    client = dev.client(timeout_s=0.01)
    upload(client, images()[1].data)
    client.state_write(images()[1].hash, confirm=False)
    client.erase(1)  # pending for test: may be erased
    upload(client, images()[1].data)
    client.state_write(images()[1].hash, confirm=False)
    client.reset()
    states = client.image_state()
    assert [s.hash.hex() for s in states if s.active] == [new_hash()]
    with pytest.raises(DeviceError, match="NO_FREE_SLOT"):
        client.erase(1)
    assert any(s.hash.hex() == old_hash() for s in client.image_state())
