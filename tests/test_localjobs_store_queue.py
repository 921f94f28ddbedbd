"""The job store's start-next, get and $next replies, and step timeouts on an injected clock.
Pure tier: SQLite in tmp, no broker."""

from __future__ import annotations

import json
from typing import Any

import localjobs_store_kit
import pytest
from localjobs_store_kit import BAD, DOC, T0, FakeClock, execution, ok, refused

from localjobs import model as m
from localjobs.store import JobStore

clock = localjobs_store_kit.clock  # the kit's fixture, bound here for pytest to find
store = localjobs_store_kit.store  # the kit's fixture, bound here for pytest to find


# -- start-next, get, $next ------------------------------------------------------------------
def test_start_next_order_in_progress_first_then_queued_by_creation(
    store: JobStore, clock: FakeClock
) -> None:
    assert ok(store.start_next("t1")) == {}
    assert ok(store.describe_execution("t1", m.NEXT)) == {}
    for job in ("a", "b", "c"):
        store.create_job(job, ["t1"], DOC)
        clock.advance(1)
    ok(store.update_execution("t1", "c", m.IN_PROGRESS))  # the newest, but IN_PROGRESS
    assert ok(store.describe_execution("t1", m.NEXT))["execution"]["jobId"] == "c"
    got = ok(store.start_next("t1"))["execution"]
    assert (got["jobId"], got["status"], got["versionNumber"]) == ("c", m.IN_PROGRESS, 2)
    ok(store.update_execution("t1", "c", m.SUCCEEDED))
    got = ok(store.start_next("t1", {"phase": "downloading"}))["execution"]
    assert (got["jobId"], got["status"], got["statusDetails"]) == (
        "a",
        m.IN_PROGRESS,
        {"phase": "downloading"},
    )
    assert got["startedAt"] == int(clock.now)
    assert got["jobDocument"] == json.loads(DOC)
    pending = ok(store.get_pending("t1"))
    assert [j["jobId"] for j in pending["inProgressJobs"]] == ["a"]
    assert [j["jobId"] for j in pending["queuedJobs"]] == ["b"]
    assert "startedAt" not in pending["queuedJobs"][0]


def test_start_next_on_an_in_progress_execution_changes_nothing_unless_asked(
    store: JobStore,
) -> None:
    store.create_job("j1", ["t1"], DOC)
    first = ok(store.start_next("t1"))["execution"]
    again = ok(store.start_next("t1"))["execution"]
    assert again["versionNumber"] == first["versionNumber"] == 2
    third = ok(store.start_next("t1", {"phase": "resumed"}))["execution"]
    assert third["versionNumber"] == 3 and third["statusDetails"] == {"phase": "resumed"}


def test_execution_object_fields(store: JobStore, clock: FakeClock) -> None:
    store.create_job("j1", ["t1"], DOC)
    queued = ok(store.describe_execution("t1", "j1"))["execution"]
    assert queued == {
        "jobId": "j1",
        "thingName": "t1",
        "jobDocument": json.loads(DOC),
        "status": m.QUEUED,
        "statusDetails": {},
        "queuedAt": int(T0),
        "lastUpdatedAt": int(T0),
        "versionNumber": 1,
        "executionNumber": 1,
    }
    bare = ok(store.describe_execution("t1", "j1", include_document=False))["execution"]
    assert "jobDocument" not in bare


# -- step timeouts (injected clock) ------------------------------------------------------------
def test_step_timeout_times_the_execution_out_lazily(store: JobStore, clock: FakeClock) -> None:
    store.create_job("j1", ["t1"], DOC)
    got = ok(store.start_next("t1", step_timeout=2))["execution"]
    assert got["approximateSecondsBeforeTimedOut"] == 120
    clock.advance(119)
    assert execution(store).status == m.IN_PROGRESS
    clock.advance(1)
    # no sweep ran: the next access sees it
    refused(store.describe_execution("t1", "j1"), m.TERMINAL_STATE_REACHED)
    e = execution(store)
    assert (e.status, e.version_number, e.deadline) == (m.TIMED_OUT, 3, None)
    assert store.describe("j1").status == m.JOB_COMPLETED
    r = refused(store.update_execution("t1", "j1", m.SUCCEEDED), BAD)
    assert r.execution_state is not None and r.execution_state["status"] == m.TIMED_OUT


def test_sweep_reports_the_things_it_timed_out(store: JobStore, clock: FakeClock) -> None:
    store.create_job("j1", ["t1", "t2"], DOC)
    ok(store.start_next("t1", step_timeout=1))
    ok(store.start_next("t2", step_timeout=5))
    assert store.expire_due() == []
    clock.advance(60)
    assert store.expire_due() == ["t1"]
    assert store.expire_due() == []


def test_a_new_step_timeout_restarts_the_timer_and_minus_one_stops_it(
    store: JobStore, clock: FakeClock
) -> None:
    store.create_job("j1", ["t1"], DOC)
    ok(store.start_next("t1", step_timeout=1))
    clock.advance(50)
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS, step_timeout=1))  # restarts
    clock.advance(50)
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS))  # no value: the timer runs on
    clock.advance(9)
    assert execution(store).status == m.IN_PROGRESS
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS, step_timeout=-1))
    clock.advance(7 * 24 * 3600)
    assert execution(store).status == m.IN_PROGRESS
    assert (
        "approximateSecondsBeforeTimedOut"
        not in ok(store.describe_execution("t1", "j1"))["execution"]
    )


def test_the_jobs_default_step_timeout_starts_when_the_execution_does(
    store: JobStore, clock: FakeClock
) -> None:
    store.create_job("j1", ["t1"], DOC, step_timeout_minutes=3)
    clock.advance(3600)  # QUEUED executions never time out
    got = ok(store.start_next("t1"))["execution"]
    assert got["approximateSecondsBeforeTimedOut"] == 180
    clock.advance(180)
    assert store.pending("t1") == []
    assert execution(store).status == m.TIMED_OUT


@pytest.mark.parametrize("minutes", [0, 10_081, -2, True, "5"])
def test_step_timeout_range(store: JobStore, minutes: Any) -> None:
    store.create_job("j1", ["t1"], DOC)
    refused(store.start_next("t1", step_timeout=minutes), m.INVALID_REQUEST)
    refused(
        store.update_execution("t1", "j1", m.IN_PROGRESS, step_timeout=minutes), m.INVALID_REQUEST
    )


def test_minus_one_is_for_updates_only(store: JobStore) -> None:
    store.create_job("j1", ["t1"], DOC)
    refused(store.start_next("t1", step_timeout=-1), m.INVALID_REQUEST)
    ok(store.start_next("t1", step_timeout=10_080))
