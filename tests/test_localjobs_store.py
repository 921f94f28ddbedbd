"""The job store's AWS IoT Jobs semantics: the transition table, versions, step timeouts
(on an injected clock), limits, and the operator API.  Pure tier: SQLite in tmp, no broker."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fota_common.errors import BridgeError, ConfigError
from localjobs import model as m
from localjobs.model import Rejection
from localjobs.store import JobStore

T0 = 1_700_000_000.0
DOC = json.dumps({"operation": "fota", "version": "1.0.0"})


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[JobStore]:
    with JobStore(tmp_path / "state" / "jobs.sqlite3", clock=clock) as s:
        yield s


def ok(result: Any) -> dict[str, Any]:
    assert not isinstance(result, Rejection), result
    assert isinstance(result, dict)
    return result


def refused(result: Any, code: str) -> Rejection:
    assert isinstance(result, Rejection), result
    assert result.code == code, result
    return result


def execution(store: JobStore, job: str = "j1", thing: str = "t1") -> Any:
    return next(e for e in store.describe(job).executions if e.thing_name == thing)


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
OK = "accepted"
BAD = m.INVALID_STATE_TRANSITION
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


# -- statusDetails and name limits -----------------------------------------------------------
GOOD_DETAILS = [{}, {"k": "v"}, {"a:b_c-D9": "x" * 1024}, {"k" * 128: "ü ✓ spaces ok"}]
BAD_DETAILS: list[Any] = [
    {"": "v"},
    {"k" * 129: "v"},
    {"bad key": "v"},
    {"k/": "v"},
    {"k": ""},
    {"k": "x" * 1025},
    {"k": "line\nbreak"},
    {"k": "nul\x00"},
    {"k": "\x7f"},
    {"k": 1},
    {"k": None},
    ["k"],
    "k",
]


@pytest.mark.parametrize("details", GOOD_DETAILS)
def test_good_status_details(store: JobStore, details: dict[str, str]) -> None:
    store.create_job("j1", ["t1"], DOC)
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS, details))
    assert execution(store).status_details == details


@pytest.mark.parametrize("details", BAD_DETAILS)
def test_bad_status_details(store: JobStore, details: Any) -> None:
    store.create_job("j1", ["t1"], DOC)
    refused(store.update_execution("t1", "j1", m.IN_PROGRESS, details), m.INVALID_REQUEST)
    refused(store.start_next("t1", details), m.INVALID_REQUEST)
    assert execution(store).version_number == 1


@pytest.mark.parametrize(
    ("thing", "good"),
    [
        ("t" * 128, True),
        ("a:b_c-9", True),
        ("t" * 129, False),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("a.b", False),
    ],
)
def test_thing_name_syntax(store: JobStore, thing: str, good: bool) -> None:
    if good:
        store.create_job("j1", [thing], DOC)
        ok(store.get_pending(thing))
    else:
        with pytest.raises(ConfigError):
            store.create_job("j1", [thing], DOC)
        refused(store.get_pending(thing), m.INVALID_REQUEST)


@pytest.mark.parametrize(
    ("job_id", "good"),
    [
        ("j" * 64, True),
        ("a_b-9", True),
        ("j" * 65, False),
        ("", False),
        ("a:b", False),
        ("$next", False),
    ],
)
def test_job_id_syntax(store: JobStore, job_id: str, good: bool) -> None:
    if good:
        store.create_job(job_id, ["t1"], DOC)
        ok(store.update_execution("t1", job_id, m.IN_PROGRESS))
    else:
        with pytest.raises(ConfigError):
            store.create_job(job_id, ["t1"], DOC)
        refused(store.update_execution("t1", job_id, m.IN_PROGRESS), m.INVALID_REQUEST)


def test_document_limits(store: JobStore) -> None:
    pad = m.MAX_DOCUMENT_CHARS - len('{"x":""}')
    store.create_job("big", ["t1"], json.dumps({"x": "y" * pad}, separators=(",", ":")))
    for bad in (json.dumps({"x": "y" * (pad + 1)}, separators=(",", ":")), "[1]", "{", ""):
        with pytest.raises(ConfigError):
            store.create_job("bad", ["t1"], bad)


def test_pending_lists_hold_at_most_ten(store: JobStore, clock: FakeClock) -> None:
    for i in range(12):
        store.create_job(f"j{i:02}", ["t1"], DOC)
        clock.advance(1)
    ok(store.update_execution("t1", "j11", m.IN_PROGRESS))
    pending = ok(store.get_pending("t1"))
    assert [j["jobId"] for j in pending["inProgressJobs"]] == ["j11"]
    assert [j["jobId"] for j in pending["queuedJobs"]] == [f"j{i:02}" for i in range(9)]
    assert len(store.pending("t1")) == 12  # the store keeps them all


# -- operator API ------------------------------------------------------------------------------
def test_create_validates_and_refuses_duplicates(store: JobStore) -> None:
    job = store.create_job("j1", ["t1", "t2", "t1"], DOC)
    assert [e.thing_name for e in job.executions] == ["t1", "t2"]
    assert job.status == m.JOB_IN_PROGRESS and job.counts() == {m.QUEUED: 2}
    with pytest.raises(ConfigError, match="already exists"):
        store.create_job("j1", ["t3"], DOC)
    with pytest.raises(ConfigError, match="target"):
        store.create_job("j2", [], DOC)
    with pytest.raises(ConfigError, match="stepTimeout"):
        store.create_job("j2", ["t1"], DOC, step_timeout_minutes=0)
    with pytest.raises(BridgeError, match="no job"):
        store.describe("zz")
    assert [j.job_id for j in store.list_jobs()] == ["j1"]


def test_cancel_spares_in_progress_executions_unless_forced(store: JobStore) -> None:
    store.create_job("j1", ["t1", "t2"], DOC)
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS))
    job = store.cancel_job("j1")
    assert job.status == m.JOB_CANCELED
    assert {e.thing_name: e.status for e in job.executions} == {
        "t1": m.IN_PROGRESS,
        "t2": m.CANCELED,
    }
    with pytest.raises(ConfigError, match="already CANCELED"):
        store.cancel_job("j1")
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS, {"still": "going"}))
    job = store.cancel_job("j1", force=True)
    assert job.counts() == {m.CANCELED: 2}
    refused(store.update_execution("t1", "j1", m.SUCCEEDED), BAD)


def test_a_job_completes_when_every_execution_ended(store: JobStore) -> None:
    store.create_job("j1", ["t1", "t2"], DOC)
    ok(store.update_execution("t1", "j1", m.SUCCEEDED))
    assert store.describe("j1").status == m.JOB_IN_PROGRESS
    ok(store.update_execution("t2", "j1", m.REJECTED, {"reason": "bad document"}))
    job = store.describe("j1")
    assert job.status == m.JOB_COMPLETED and job.completed_at == T0
    with pytest.raises(ConfigError, match="COMPLETED"):
        store.cancel_job("j1")
    assert job.as_dict(T0)["counts"] == {m.SUCCEEDED: 1, m.REJECTED: 1}


def test_change_log_names_each_touched_thing(store: JobStore) -> None:
    start = store.last_change()
    store.create_job("j1", ["t1", "t2"], DOC)
    ok(store.update_execution("t2", "j1", m.IN_PROGRESS))
    seq, things = store.changes_since(start)
    assert things == ["t1", "t2"] and seq > start
    assert store.changes_since(seq) == (seq, [])
    refused(store.update_execution("t2", "j1", "QUEUED"), m.INVALID_REQUEST)  # no change
    assert store.changes_since(seq) == (seq, [])


# -- the file ----------------------------------------------------------------------------------
def test_file_is_private_and_survives_reopening(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "jobs.sqlite3"
    with JobStore(path, clock) as s:
        s.create_job("j1", ["t1"], DOC)
        ok(s.update_execution("t1", "j1", m.IN_PROGRESS, {"phase": "x"}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for side in path.parent.glob("jobs.sqlite3-*"):
        assert stat.S_IMODE(side.stat().st_mode) == 0o600
    with JobStore(path, clock) as s:
        assert execution(s).status_details == {"phase": "x"}


def test_concurrent_updates_from_threads_lose_nothing(store: JobStore) -> None:
    store.create_job("j1", ["t1"], DOC)
    ok(store.update_execution("t1", "j1", m.IN_PROGRESS))
    errors: list[BaseException] = []

    def hammer(n: int) -> None:
        try:
            for i in range(25):
                ok(store.update_execution("t1", "j1", m.IN_PROGRESS, {"t": f"{n}-{i}"}))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and not any(t.is_alive() for t in threads)
    assert execution(store).version_number == 2 + 8 * 25


# -- properties --------------------------------------------------------------------------------
KEY = st.text(alphabet="abcXYZ019:_-", min_size=1, max_size=128)


@given(
    st.dictionaries(
        KEY,
        st.text(min_size=1, max_size=1024).filter(
            lambda v: (
                not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in v)
            )
        ),
        max_size=5,
    )
)
def test_valid_details_are_accepted(details: dict[str, str]) -> None:
    assert m.status_details_problem(details) is None


@given(st.dictionaries(st.text(max_size=130), st.one_of(st.text(max_size=1030), st.integers())))
def test_details_checks_never_raise(details: dict[str, Any]) -> None:
    problem = m.status_details_problem(details)
    assert problem is None or isinstance(problem, str)


@given(st.text(max_size=200), st.text(max_size=80), st.sampled_from([None, *m.STATUSES, "x"]))
def test_request_checks_never_raise(thing: str, job_id: str, status: str | None) -> None:
    problem = m.request_problem(thing, job_id, status=status)
    assert problem is None or isinstance(problem, str)
