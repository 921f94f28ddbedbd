"""The job store's operator API (create, cancel, completion, the change log) and its file:
private, durable, and safe under concurrent updates.  Pure tier: SQLite in tmp, no broker."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import localjobs_store_kit
import pytest
from localjobs_store_kit import BAD, DOC, T0, FakeClock, execution, ok, refused

from fota_common.errors import BridgeError, ConfigError
from localjobs import model as m
from localjobs.store import JobStore

clock = localjobs_store_kit.clock  # the kit's fixture, bound here for pytest to find
store = localjobs_store_kit.store  # the kit's fixture, bound here for pytest to find


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
