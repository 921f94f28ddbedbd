"""The job store's SQLite file: its schema, the connection, and every query on it.

One connection guarded by a lock serves every thread; SQLite's own locking (WAL, a busy
timeout) serves other processes, so ``fota-bridge jobs create`` can write while the service
runs.  The file is created with mode 0600.  Queries take the connection of an open
:meth:`Database.transaction`; each write of an execution also appends its thing to the change
log that the service reads to publish ``notify`` / ``notify-next``.

No rules live here: which transitions are allowed and what a device is told is
:mod:`localjobs.store` and :mod:`localjobs.model`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localjobs import LocalJobsError
from localjobs import model as m
from localjobs.model import Execution, Job

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


def _open_private(path: Path) -> None:
    """Create the database file with mode 0600 (SQLite gives its WAL files the same mode)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Database:
    """The SQLite file at ``path``, its schema created or checked on open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            _open_private(self.path)
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise LocalJobsError(f"cannot open the job store {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        with self.transaction() as db:
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

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
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


# -- executions ------------------------------------------------------------------------------
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


def get_execution(db: sqlite3.Connection, job_id: str, thing: str) -> Execution | None:
    row = db.execute(
        f"{_SELECT} WHERE e.job_id = ? AND e.thing_name = ?", (job_id, thing)
    ).fetchone()
    return None if row is None else _execution(row)


def pending_executions(db: sqlite3.Connection, thing: str) -> list[Execution]:
    """The thing's QUEUED and IN_PROGRESS executions in delivery order."""
    rows = db.execute(
        f"{_SELECT} WHERE e.thing_name = ? AND e.status IN ('QUEUED', 'IN_PROGRESS') "
        f"{_PENDING_ORDER}",
        (thing,),
    ).fetchall()
    return [_execution(r) for r in rows]


def overdue_executions(db: sqlite3.Connection, now: float) -> list[Execution]:
    """The IN_PROGRESS executions whose step deadline is ``now`` or earlier."""
    rows = db.execute(
        f"{_SELECT} WHERE e.status = 'IN_PROGRESS' AND e.deadline IS NOT NULL AND e.deadline <= ?",
        (now,),
    ).fetchall()
    return [_execution(r) for r in rows]


def add_execution(db: sqlite3.Connection, job_id: str, thing: str, now: float) -> None:
    """A new QUEUED execution (version 1, execution number 1); logged as a change."""
    db.execute(
        "INSERT INTO executions (job_id, thing_name, status, status_details, "
        "version_number, execution_number, queued_at, last_updated_at) "
        "VALUES (?, ?, ?, '{}', 1, 1, ?, ?)",
        (job_id, thing, m.QUEUED, now, now),
    )
    _log_change(db, thing)


def save_execution(db: sqlite3.Connection, e: Execution) -> None:
    """Write ``e`` over its row; logged as a change."""
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
    _log_change(db, e.thing_name)


def things_with_pending(db: sqlite3.Connection) -> list[str]:
    return [
        r[0]
        for r in db.execute(
            "SELECT DISTINCT thing_name FROM executions WHERE status IN "
            "('QUEUED', 'IN_PROGRESS') ORDER BY thing_name"
        )
    ]


# -- jobs ------------------------------------------------------------------------------------
def job_exists(db: sqlite3.Connection, job_id: str) -> bool:
    return db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone() is not None


def add_job(
    db: sqlite3.Connection,
    job_id: str,
    document: str,
    now: float,
    step_timeout_minutes: int | None,
) -> None:
    """A new IN_PROGRESS job without executions."""
    db.execute(
        "INSERT INTO jobs (job_id, document, status, created_at, last_updated_at, "
        "step_timeout_minutes) VALUES (?, ?, ?, ?, ?, ?)",
        (job_id, document, m.JOB_IN_PROGRESS, now, now, step_timeout_minutes),
    )


def set_job_status(db: sqlite3.Connection, job_id: str, status: str, now: float) -> None:
    db.execute(
        "UPDATE jobs SET status = ?, last_updated_at = ? WHERE job_id = ?",
        (status, now, job_id),
    )


def settle_job(db: sqlite3.Connection, job_id: str, now: float) -> None:
    """One of the job's executions ended: a running job whose executions all ended is
    COMPLETED."""
    db.execute("UPDATE jobs SET last_updated_at = ? WHERE job_id = ?", (now, job_id))
    left = db.execute(
        "SELECT COUNT(*) FROM executions WHERE job_id = ? AND status IN ('QUEUED', 'IN_PROGRESS')",
        (job_id,),
    ).fetchone()[0]
    if left == 0:
        db.execute(
            "UPDATE jobs SET status = ?, completed_at = ? WHERE job_id = ? AND status = ?",
            (m.JOB_COMPLETED, now, job_id, m.JOB_IN_PROGRESS),
        )


def load_job(db: sqlite3.Connection, job_id: str) -> Job | None:
    """The job with its executions in the order they were created, or None."""
    row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    rows = db.execute(f"{_SELECT} WHERE e.job_id = ? ORDER BY e.rowid", (job_id,)).fetchall()
    return Job(
        row["job_id"],
        row["status"],
        row["document"],
        row["created_at"],
        row["last_updated_at"],
        row["completed_at"],
        row["step_timeout_minutes"],
        tuple(_execution(r) for r in rows),
    )


def job_ids(db: sqlite3.Connection) -> list[str]:
    """Every job's id, oldest first."""
    return [r[0] for r in db.execute("SELECT job_id FROM jobs ORDER BY seq")]


# -- the change log --------------------------------------------------------------------------
def _log_change(db: sqlite3.Connection, thing: str) -> None:
    db.execute("INSERT INTO changes (thing_name) VALUES (?)", (thing,))


def last_change(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0])


def take_changes(db: sqlite3.Connection, seq: int) -> list[tuple[int, str]]:
    """The (change number, thing) entries after ``seq``, oldest first; forgets those up to
    ``seq``."""
    rows = db.execute(
        "SELECT seq, thing_name FROM changes WHERE seq > ? ORDER BY seq", (seq,)
    ).fetchall()
    db.execute("DELETE FROM changes WHERE seq <= ?", (seq,))
    return [(int(r[0]), str(r[1])) for r in rows]
