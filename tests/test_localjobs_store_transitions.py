"""The job store's AWS IoT Jobs transition table, version numbers and not-found replies.
Pure tier: SQLite in tmp, no broker."""

from __future__ import annotations

import json

import localjobs_store_kit
import pytest
from localjobs_store_kit import BAD, DOC, OK, FakeClock, execution, ok, refused

from localjobs import model as m
from localjobs.store import JobStore

clock = localjobs_store_kit.clock  # the kit's fixture, bound here for pytest to find
store = localjobs_store_kit.store  # the kit's fixture, bound here for pytest to find


# -- bringing an execution into each status through the public API ---------------------------
def put_in(store: JobStore, clock: FakeClock, status: str) -> None:
    """Job j1 on thing t1, its execution in ``status``."""
    store.create_job("j1", ["t1"], DOC)
    if status == m.QUEUED:
        pass
    elif status == m.IN_PROGRESS:
        ok(store.update_execution("t1", "j1", m.IN_PROGRESS))
    elif status in (m.SUCCEEDED, m.FAILED, m.REJECTED):
        ok(store.update_execution("t1", "j1", status))
    elif status == m.TIMED_OUT:
        ok(store.start_next("t1", step_timeout=1))
        clock.advance(60)
    elif status == m.CANCELED:
        store.cancel_job("j1")
    elif status == m.REMOVED:
        store.remove_execution("j1", "t1")
    assert execution(store).status == status


# Written out rather than derived from model.ALLOWED, so that the table is checked.
EXPECTED: dict[str, dict[str, str]] = {
    m.QUEUED: {m.IN_PROGRESS: OK, m.SUCCEEDED: OK, m.FAILED: OK, m.REJECTED: OK},
    m.IN_PROGRESS: {m.IN_PROGRESS: OK, m.SUCCEEDED: OK, m.FAILED: OK, m.REJECTED: OK},
    **{
        s: {m.IN_PROGRESS: BAD, m.SUCCEEDED: BAD, m.FAILED: BAD, m.REJECTED: BAD}
        for s in (m.SUCCEEDED, m.FAILED, m.REJECTED, m.TIMED_OUT, m.CANCELED, m.REMOVED)
    },
}
CASES = [(frm, to, want) for frm, row in EXPECTED.items() for to, want in row.items()]


@pytest.mark.parametrize(("frm", "to", "want"), CASES, ids=[f"{a}->{b}" for a, b, _ in CASES])
def test_transition_table(store: JobStore, clock: FakeClock, frm: str, to: str, want: str) -> None:
    put_in(store, clock, frm)
    before = execution(store)
    result = store.update_execution("t1", "j1", to, {"step": "x"}, include_state=True)
    after = execution(store)
    if want == OK:
        assert ok(result)["executionState"] == {
            "status": to,
            "statusDetails": {"step": "x"},
            "versionNumber": before.version_number + 1,
        }
        assert after.status == to
    else:
        r = refused(result, want)
        assert r.execution_state == before.state()
        assert after == before  # nothing changed


@pytest.mark.parametrize("frm", list(EXPECTED))
@pytest.mark.parametrize("to", [m.QUEUED, m.TIMED_OUT, m.CANCELED, m.REMOVED, "DONE", ""])
def test_statuses_a_device_may_not_set(
    store: JobStore, clock: FakeClock, frm: str, to: str
) -> None:
    put_in(store, clock, frm)
    r = refused(store.update_execution("t1", "j1", to), m.INVALID_REQUEST)
    assert r.execution_state is None


def test_every_status_is_in_the_table() -> None:
    assert set(EXPECTED) == set(m.STATUSES)
    assert {(f, t) for f, t, w in CASES if w == OK} == m.ALLOWED


# -- versions --------------------------------------------------------------------------------
def test_versions_count_every_change(store: JobStore) -> None:
    store.create_job("j1", ["t1"], DOC)
    assert execution(store).version_number == 1
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS, expected_version=1))
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS, {"progress": "1/2"}, expected_version=2))
    assert execution(store).version_number == 3
    r = refused(
        store.update_execution("t1", "j1", m.SUCCEEDED, expected_version=2), m.VERSION_MISMATCH
    )
    assert r.execution_state == {
        "status": m.IN_PROGRESS,
        "statusDetails": {"progress": "1/2"},
        "versionNumber": 3,
    }
    assert r.payload()["executionState"]["versionNumber"] == 3
    ok(store.update_execution("t1", "j1", m.SUCCEEDED, expected_version=3))


def test_version_mismatch_is_checked_before_the_transition(store: JobStore) -> None:
    store.create_job("j1", ["t1"], DOC)
    ok(store.update_execution("t1", "j1", m.SUCCEEDED))
    refused(store.update_execution("t1", "j1", m.FAILED, expected_version=1), m.VERSION_MISMATCH)
    refused(store.update_execution("t1", "j1", m.FAILED, expected_version=2), BAD)


def test_status_details_are_kept_when_omitted_and_replaced_when_given(store: JobStore) -> None:
    store.create_job("j1", ["t1"], DOC)
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS, {"phase": "downloading", "a": "1"}))
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS))
    assert execution(store).status_details == {"phase": "downloading", "a": "1"}
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS, {"phase": "uploading"}))
    assert execution(store).status_details == {"phase": "uploading"}


def test_update_reply_carries_what_was_asked_for(store: JobStore) -> None:
    store.create_job("j1", ["t1"], DOC)
    assert ok(store.update_execution("t1", "j1", m.IN_PROGRESS)) == {}
    both = ok(
        store.update_execution("t1", "j1", m.IN_PROGRESS, include_state=True, include_document=True)
    )
    assert both["jobDocument"] == json.loads(DOC)
    assert both["executionState"]["versionNumber"] == 3


# -- not found -------------------------------------------------------------------------------
def test_unknown_jobs_and_other_things_are_not_found(store: JobStore) -> None:
    store.create_job("j1", ["t1"], DOC)
    refused(store.update_execution("t1", "nope", m.IN_PROGRESS), m.RESOURCE_NOT_FOUND)
    refused(store.update_execution("t2", "j1", m.IN_PROGRESS), m.RESOURCE_NOT_FOUND)
    refused(store.describe_execution("t2", "j1"), m.RESOURCE_NOT_FOUND)
    refused(store.describe_execution("t1", "j1", execution_number=2), m.RESOURCE_NOT_FOUND)
    refused(
        store.update_execution("t1", "j1", m.IN_PROGRESS, execution_number=2), m.RESOURCE_NOT_FOUND
    )
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS, execution_number=1))


def test_describing_an_ended_execution_is_terminal_state_reached(store: JobStore) -> None:
    store.create_job("j1", ["t1"], DOC)
    ok(store.update_execution("t1", "j1", m.FAILED, {"reason": "hash mismatch"}))
    refused(store.describe_execution("t1", "j1"), m.TERMINAL_STATE_REACHED)
