"""The job store: the AWS IoT Jobs state machine over jobs and their executions.

:class:`JobStore` is the operator's API (create, cancel, remove, describe), the device's
(GetPending, StartNext, Describe, Update, answered with AWS's error codes as
:class:`~localjobs.model.Rejection` values) and the service's (pending executions, the change
log).  The SQLite file, its schema and its queries are :mod:`localjobs.database`; every write
is logged there as a change, which the service reads to publish ``notify`` / ``notify-next``.

Step timers are checked lazily at the start of every access (and by the service's sweep):
an IN_PROGRESS execution past its deadline becomes TIMED_OUT before anything else is read.
The clock is injected; timestamps are epoch seconds.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from fota_common.errors import ConfigError
from localjobs import database as q
from localjobs import model as m
from localjobs.model import Execution, Job, Rejection

Result = dict[str, Any] | Rejection


def _invalid(message: str) -> Rejection:
    return Rejection(m.INVALID_REQUEST, message)


def _not_found(job_id: str, thing: str) -> Rejection:
    return Rejection(m.RESOURCE_NOT_FOUND, f"no execution of job {job_id} on thing {thing}")


class JobStore:
    """Jobs, executions and the change log in the SQLite file at ``path``."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._db = q.Database(self.path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _save(self, db: sqlite3.Connection, e: Execution) -> None:
        q.save_execution(db, e)
        if e.status in m.TERMINAL:
            q.settle_job(db, e.job_id, e.last_updated_at)

    def _expire(self, db: sqlite3.Connection, now: float) -> list[str]:
        """Time out every IN_PROGRESS execution past its deadline; the things touched."""
        things: list[str] = []
        for e in q.overdue_executions(db, now):
            self._save(db, m.ended(e, m.TIMED_OUT, now))
            things.append(e.thing_name)
        return things

    def _job(self, db: sqlite3.Connection, job_id: str) -> Job:
        job = q.load_job(db, job_id)
        if job is None:
            raise ConfigError(f"no job {job_id!r} in {self.path}")
        return job

    # -- operator API ------------------------------------------------------------------------
    def create_job(
        self,
        job_id: str,
        targets: Iterable[str],
        document: str,
        step_timeout_minutes: int | None = None,
    ) -> Job:
        """Queue ``document`` as job ``job_id`` for each thing in ``targets``.

        ``step_timeout_minutes`` is the job's default step timer: an execution that goes
        IN_PROGRESS without its own ``stepTimeoutInMinutes`` gets this one.
        """
        things = list(dict.fromkeys(targets))
        problem = (
            m.job_id_problem(job_id)
            or m.document_problem(document)
            or next(filter(None, map(m.thing_name_problem, things)), None)
        )
        if problem is None and not things:
            problem = "a job needs at least one target thing"
        if problem is None and step_timeout_minutes is not None:
            problem = m.step_timeout_problem(step_timeout_minutes)
        if problem:
            raise ConfigError(problem)
        now = self.clock()
        with self._db.transaction() as db:
            if q.job_exists(db, job_id):
                raise ConfigError(f"job {job_id} already exists")
            self._expire(db, now)
            q.add_job(db, job_id, document, now, step_timeout_minutes)
            for thing in things:
                q.add_execution(db, job_id, thing, now)
            return self._job(db, job_id)

    def cancel_job(self, job_id: str, *, force: bool = False) -> Job:
        """Cancel the job's QUEUED executions, and with ``force`` its IN_PROGRESS ones too;
        an IN_PROGRESS execution left running may still finish (AWS's CancelJob)."""
        now = self.clock()
        with self._db.transaction() as db:
            self._expire(db, now)
            job = self._job(db, job_id)
            if job.status == m.JOB_COMPLETED:
                raise ConfigError(f"job {job_id} is already COMPLETED")
            if job.status == m.JOB_CANCELED and not force:
                raise ConfigError(
                    f"job {job_id} is already CANCELED (--force also cancels its "
                    "IN_PROGRESS executions)"
                )
            q.set_job_status(db, job_id, m.JOB_CANCELED, now)
            for e in job.executions:
                if e.status == m.QUEUED or (force and e.status == m.IN_PROGRESS):
                    self._save(db, m.ended(e, m.CANCELED, now))
            return self._job(db, job_id)

    def remove_execution(self, job_id: str, thing: str) -> Execution:
        """The thing left the job's targets: its pending execution becomes REMOVED."""
        now = self.clock()
        with self._db.transaction() as db:
            self._expire(db, now)
            e = q.get_execution(db, job_id, thing)
            if e is None:
                raise ConfigError(f"job {job_id} has no execution on thing {thing}")
            if not e.pending:
                raise ConfigError(f"the execution of job {job_id} on {thing} is {e.status}")
            e = m.ended(e, m.REMOVED, now)
            self._save(db, e)
            return e

    def describe(self, job_id: str) -> Job:
        with self._db.transaction() as db:
            self._expire(db, self.clock())
            return self._job(db, job_id)

    def list_jobs(self) -> list[Job]:
        """Every job, oldest first."""
        with self._db.transaction() as db:
            self._expire(db, self.clock())
            return [self._job(db, i) for i in q.job_ids(db)]

    # -- device API (AWS IoT Jobs MQTT semantics) ---------------------------------------------
    def get_pending(self, thing: str) -> Result:
        """GetPendingJobExecutions: ``{inProgressJobs, queuedJobs}``."""
        if problem := m.request_problem(thing):
            return _invalid(problem)
        with self._db.transaction() as db:
            self._expire(db, self.clock())
            in_progress, queued = m.pending_lists(q.pending_executions(db, thing))
        return {
            "inProgressJobs": [e.summary() for e in in_progress],
            "queuedJobs": [e.summary() for e in queued],
        }

    def start_next(
        self,
        thing: str,
        status_details: Mapping[str, str] | None = None,
        step_timeout: int | None = None,
    ) -> Result:
        """StartNextPendingJobExecution: ``{execution}``, or ``{}`` when nothing is pending."""
        if problem := m.request_problem(thing, details=status_details, step_timeout=step_timeout):
            return _invalid(problem)
        now = self.clock()
        with self._db.transaction() as db:
            self._expire(db, now)
            pending = q.pending_executions(db, thing)
            if not pending:
                return {}
            e = pending[0]
            if e.status == m.QUEUED or status_details is not None or step_timeout is not None:
                e = m.advance(e, m.IN_PROGRESS, status_details, step_timeout, now)
                self._save(db, e)
            return {"execution": e.execution(now)}

    def describe_execution(
        self,
        thing: str,
        job_id: str,
        execution_number: int | None = None,
        include_document: bool = True,
    ) -> Result:
        """DescribeJobExecution: ``{execution}``; for ``$next`` ``{}`` when nothing is pending."""
        if problem := m.request_problem(thing, job_id):
            return _invalid(problem)
        now = self.clock()
        with self._db.transaction() as db:
            self._expire(db, now)
            if job_id == m.NEXT:
                pending = q.pending_executions(db, thing)
                if not pending:
                    return {}
                e: Execution | None = pending[0]
            else:
                e = q.get_execution(db, job_id, thing)
        if e is None or (execution_number is not None and execution_number != e.execution_number):
            return _not_found(job_id, thing)
        if e.status in m.TERMINAL:
            return Rejection(
                m.TERMINAL_STATE_REACHED, f"the execution of job {job_id} on {thing} is {e.status}"
            )
        return {"execution": e.execution(now, include_document=include_document)}

    def update_execution(
        self,
        thing: str,
        job_id: str,
        status: str,
        status_details: Mapping[str, str] | None = None,
        expected_version: int | None = None,
        execution_number: int | None = None,
        step_timeout: int | None = None,
        include_state: bool = False,
        include_document: bool = False,
    ) -> Result:
        """UpdateJobExecution: ``{executionState?, jobDocument?}`` or a Rejection."""
        problem = m.request_problem(
            thing, job_id, status=status, details=status_details, step_timeout=step_timeout
        )
        if problem:
            return _invalid(problem)
        now = self.clock()
        with self._db.transaction() as db:
            self._expire(db, now)
            e = q.get_execution(db, job_id, thing)
            if e is None or (
                execution_number is not None and execution_number != e.execution_number
            ):
                return _not_found(job_id, thing)
            if expected_version is not None and expected_version != e.version_number:
                return Rejection(
                    m.VERSION_MISMATCH,
                    f"expected version {expected_version}, the execution is at {e.version_number}",
                    e.state(),
                )
            if (e.status, status) not in m.ALLOWED:
                return Rejection(
                    m.INVALID_STATE_TRANSITION,
                    f"cannot change the execution from {e.status} to {status}",
                    e.state(),
                )
            e = m.advance(e, status, status_details, step_timeout, now)
            self._save(db, e)
        out: dict[str, Any] = {}
        if include_state:
            out["executionState"] = e.state()
        if include_document:
            out["jobDocument"] = e.job_document()
        return out

    # -- for the service -----------------------------------------------------------------------
    def pending(self, thing: str) -> list[Execution]:
        """The thing's pending executions in delivery order (the first is ``$next``)."""
        with self._db.transaction() as db:
            self._expire(db, self.clock())
            return q.pending_executions(db, thing)

    def expire_due(self) -> list[str]:
        """Time out the executions past their step deadline; the things they belong to."""
        with self._db.transaction() as db:
            return self._expire(db, self.clock())

    def last_change(self) -> int:
        with self._db.transaction() as db:
            return q.last_change(db)

    def changes_since(self, seq: int) -> tuple[int, list[str]]:
        """(the newest change number, the things changed after ``seq``); forgets the older."""
        with self._db.transaction() as db:
            rows = q.take_changes(db, seq)
        if not rows:
            return seq, []
        return rows[-1][0], list(dict.fromkeys(r[1] for r in rows))

    def things_with_pending(self) -> list[str]:
        with self._db.transaction() as db:
            self._expire(db, self.clock())
            return q.things_with_pending(db)
