"""The job store: jobs and their executions in one SQLite file, with AWS IoT Jobs semantics.

One connection guarded by a lock serves every thread; SQLite's own locking (WAL, a busy
timeout) serves other processes, so ``fota-bridge jobs create`` can write while the service
runs.  Every write appends the things it touched to a change log that the service reads to
publish ``notify`` / ``notify-next``.

Step timers are checked lazily at the start of every access (and by the service's sweep):
an IN_PROGRESS execution past its deadline becomes TIMED_OUT before anything else is read.
The clock is injected; timestamps are epoch seconds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fota_common.errors import ConfigError
from localjobs import LocalJobsError
from localjobs import model as m
from localjobs.model import Execution, Job, Rejection

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    document TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_updated_at REAL NOT NULL,
    completed_at REAL,
    step_timeout_minutes INTEGER
);
CREATE TABLE executions (
    job_id TEXT NOT NULL REFERENCES jobs(job_id),
    thing_name TEXT NOT NULL,
    status TEXT NOT NULL,
    status_details TEXT NOT NULL,
    version_number INTEGER NOT NULL,
    execution_number INTEGER NOT NULL,
    queued_at REAL NOT NULL,
    started_at REAL,
    last_updated_at REAL NOT NULL,
    step_timeout_minutes INTEGER,
    deadline REAL,
    PRIMARY KEY (job_id, thing_name)
);
CREATE INDEX executions_by_thing ON executions (thing_name, status);
CREATE INDEX executions_by_deadline ON executions (deadline) WHERE deadline IS NOT NULL;
CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, thing_name TEXT NOT NULL);
"""

_SELECT = """
SELECT e.*, j.document AS document, j.seq AS job_seq,
    j.step_timeout_minutes AS job_step_timeout
FROM executions e JOIN jobs j ON j.job_id = e.job_id
"""
# IN_PROGRESS first, then QUEUED, each in job creation order.
_PENDING_ORDER = "ORDER BY CASE e.status WHEN 'IN_PROGRESS' THEN 0 ELSE 1 END, j.seq"

Result = dict[str, Any] | Rejection


def _invalid(message: str) -> Rejection:
    return Rejection(m.INVALID_REQUEST, message)


def _not_found(job_id: str, thing: str) -> Rejection:
    return Rejection(m.RESOURCE_NOT_FOUND, f"no execution of job {job_id} on thing {thing}")


def _open_private(path: Path) -> None:
    """Create the database file with mode 0600 (SQLite gives its WAL files the same mode)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class JobStore:
    """Jobs, executions and the change log in the SQLite file at ``path``."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.RLock()
        try:
            _open_private(self.path)
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise LocalJobsError(f"cannot open the job store {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise LocalJobsError(
                    f"the job store {self.path} has schema {version}; this version reads "
                    f"{SCHEMA_VERSION}"
                )
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise LocalJobsError(f"job store {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite errors become LocalJobsError."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise LocalJobsError(f"job store {self.path}: {exc}") from exc

    # -- rows --------------------------------------------------------------------------------
    @staticmethod
    def _execution(row: sqlite3.Row) -> Execution:
        return Execution(
            job_id=row["job_id"],
            thing_name=row["thing_name"],
            status=row["status"],
            status_details=json.loads(row["status_details"]),
            version_number=row["version_number"],
            execution_number=row["execution_number"],
            queued_at=row["queued_at"],
            last_updated_at=row["last_updated_at"],
            document=row["document"],
            started_at=row["started_at"],
            step_timeout_minutes=row["step_timeout_minutes"],
            deadline=row["deadline"],
            job_seq=row["job_seq"],
            job_step_timeout_minutes=row["job_step_timeout"],
        )

    def _get(self, db: sqlite3.Connection, job_id: str, thing: str) -> Execution | None:
        row = db.execute(
            f"{_SELECT} WHERE e.job_id = ? AND e.thing_name = ?", (job_id, thing)
        ).fetchone()
        return None if row is None else self._execution(row)

    def _pending(self, db: sqlite3.Connection, thing: str) -> list[Execution]:
        rows = db.execute(
            f"{_SELECT} WHERE e.thing_name = ? AND e.status IN ('QUEUED', 'IN_PROGRESS') "
            f"{_PENDING_ORDER}",
            (thing,),
        ).fetchall()
        return [self._execution(r) for r in rows]

    def _save(self, db: sqlite3.Connection, e: Execution) -> None:
        db.execute(
            "UPDATE executions SET status = ?, status_details = ?, version_number = ?, "
            "started_at = ?, last_updated_at = ?, step_timeout_minutes = ?, deadline = ? "
            "WHERE job_id = ? AND thing_name = ?",
            (
                e.status,
                json.dumps(e.status_details),
                e.version_number,
                e.started_at,
                e.last_updated_at,
                e.step_timeout_minutes,
                e.deadline,
                e.job_id,
                e.thing_name,
            ),
        )
        db.execute("INSERT INTO changes (thing_name) VALUES (?)", (e.thing_name,))
        if e.status in m.TERMINAL:
            self._settle_job(db, e.job_id, e.last_updated_at)

    @staticmethod
    def _settle_job(db: sqlite3.Connection, job_id: str, now: float) -> None:
        """A running job whose executions all ended is COMPLETED."""
        db.execute("UPDATE jobs SET last_updated_at = ? WHERE job_id = ?", (now, job_id))
        left = db.execute(
            "SELECT COUNT(*) FROM executions WHERE job_id = ? AND status IN "
            "('QUEUED', 'IN_PROGRESS')",
            (job_id,),
        ).fetchone()[0]
        if left == 0:
            db.execute(
                "UPDATE jobs SET status = ?, completed_at = ? WHERE job_id = ? AND status = ?",
                (m.JOB_COMPLETED, now, job_id, m.JOB_IN_PROGRESS),
            )

    def _expire(self, db: sqlite3.Connection, now: float) -> list[str]:
        """Time out every IN_PROGRESS execution past its deadline; the things touched."""
        rows = db.execute(
            f"{_SELECT} WHERE e.status = 'IN_PROGRESS' AND e.deadline IS NOT NULL "
            "AND e.deadline <= ?",
            (now,),
        ).fetchall()
        things: list[str] = []
        for row in rows:
            e = self._execution(row)
            self._save(
                db,
                m.ended(e, m.TIMED_OUT, now),
            )
            things.append(e.thing_name)
        return things

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
        with self._tx() as db:
            if db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone():
                raise ConfigError(f"job {job_id} already exists")
            self._expire(db, now)
            db.execute(
                "INSERT INTO jobs (job_id, document, status, created_at, last_updated_at, "
                "step_timeout_minutes) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, document, m.JOB_IN_PROGRESS, now, now, step_timeout_minutes),
            )
            for thing in things:
                db.execute(
                    "INSERT INTO executions (job_id, thing_name, status, status_details, "
                    "version_number, execution_number, queued_at, last_updated_at) "
                    "VALUES (?, ?, ?, '{}', 1, 1, ?, ?)",
                    (job_id, thing, m.QUEUED, now, now),
                )
                db.execute("INSERT INTO changes (thing_name) VALUES (?)", (thing,))
            return self._job(db, job_id)

    def cancel_job(self, job_id: str, *, force: bool = False) -> Job:
        """Cancel the job's QUEUED executions, and with ``force`` its IN_PROGRESS ones too;
        an IN_PROGRESS execution left running may still finish (AWS's CancelJob)."""
        now = self.clock()
        with self._tx() as db:
            self._expire(db, now)
            job = self._job(db, job_id)
            if job.status == m.JOB_COMPLETED:
                raise ConfigError(f"job {job_id} is already COMPLETED")
            if job.status == m.JOB_CANCELED and not force:
                raise ConfigError(
                    f"job {job_id} is already CANCELED (--force also cancels its "
                    "IN_PROGRESS executions)"
                )
            db.execute(
                "UPDATE jobs SET status = ?, last_updated_at = ? WHERE job_id = ?",
                (m.JOB_CANCELED, now, job_id),
            )
            for e in job.executions:
                if e.status == m.QUEUED or (force and e.status == m.IN_PROGRESS):
                    self._save(db, m.ended(e, m.CANCELED, now))
            return self._job(db, job_id)

    def remove_execution(self, job_id: str, thing: str) -> Execution:
        """The thing left the job's targets: its pending execution becomes REMOVED."""
        now = self.clock()
        with self._tx() as db:
            self._expire(db, now)
            e = self._get(db, job_id, thing)
            if e is None:
                raise ConfigError(f"job {job_id} has no execution on thing {thing}")
            if not e.pending:
                raise ConfigError(f"the execution of job {job_id} on {thing} is {e.status}")
            e = m.ended(e, m.REMOVED, now)
            self._save(db, e)
            return e

    def _job(self, db: sqlite3.Connection, job_id: str) -> Job:
        row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise ConfigError(f"no job {job_id!r} in {self.path}")
        rows = db.execute(f"{_SELECT} WHERE e.job_id = ? ORDER BY e.rowid", (job_id,)).fetchall()
        return Job(
            row["job_id"],
            row["status"],
            row["document"],
            row["created_at"],
            row["last_updated_at"],
            row["completed_at"],
            row["step_timeout_minutes"],
            tuple(self._execution(r) for r in rows),
        )

    def describe(self, job_id: str) -> Job:
        with self._tx() as db:
            self._expire(db, self.clock())
            return self._job(db, job_id)

    def list_jobs(self) -> list[Job]:
        """Every job, oldest first."""
        with self._tx() as db:
            self._expire(db, self.clock())
            ids = [r[0] for r in db.execute("SELECT job_id FROM jobs ORDER BY seq")]
            return [self._job(db, i) for i in ids]

    # -- device API (AWS IoT Jobs MQTT semantics) ---------------------------------------------
    def get_pending(self, thing: str) -> Result:
        """GetPendingJobExecutions: ``{inProgressJobs, queuedJobs}``."""
        if problem := m.request_problem(thing):
            return _invalid(problem)
        with self._tx() as db:
            self._expire(db, self.clock())
            in_progress, queued = m.pending_lists(self._pending(db, thing))
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
        with self._tx() as db:
            self._expire(db, now)
            pending = self._pending(db, thing)
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
        with self._tx() as db:
            self._expire(db, now)
            if job_id == m.NEXT:
                pending = self._pending(db, thing)
                if not pending:
                    return {}
                e: Execution | None = pending[0]
            else:
                e = self._get(db, job_id, thing)
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
        with self._tx() as db:
            self._expire(db, now)
            e = self._get(db, job_id, thing)
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
        with self._tx() as db:
            self._expire(db, self.clock())
            return self._pending(db, thing)

    def expire_due(self) -> list[str]:
        """Time out the executions past their step deadline; the things they belong to."""
        with self._tx() as db:
            return self._expire(db, self.clock())

    def last_change(self) -> int:
        with self._tx() as db:
            return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0])

    def changes_since(self, seq: int) -> tuple[int, list[str]]:
        """(the newest change number, the things changed after ``seq``); forgets the older."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT seq, thing_name FROM changes WHERE seq > ? ORDER BY seq", (seq,)
            ).fetchall()
            db.execute("DELETE FROM changes WHERE seq <= ?", (seq,))
        if not rows:
            return seq, []
        return rows[-1][0], list(dict.fromkeys(r[1] for r in rows))

    def things_with_pending(self) -> list[str]:
        with self._tx() as db:
            self._expire(db, self.clock())
            return [
                r[0]
                for r in db.execute(
                    "SELECT DISTINCT thing_name FROM executions WHERE status IN "
                    "('QUEUED', 'IN_PROGRESS') ORDER BY thing_name"
                )
            ]
