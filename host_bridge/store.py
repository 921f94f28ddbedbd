"""The bridge's persisted state: each device's job in flight, and every job it finished.

SQLite, one file in the state directory (mode 0600).  A restarted bridge, or a
replacement gateway given the same state directory, resumes each device from its
persisted phase; a job id that reached a terminal status is never handled again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fota_common.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS inflight (
    thing TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    execution_number INTEGER,
    version_number INTEGER,
    phase TEXT NOT NULL,
    image_sha256 TEXT,
    image_hash TEXT,
    offset INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS finished (
    thing TEXT NOT NULL,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    finished_at REAL NOT NULL,
    PRIMARY KEY (thing, job_id)
);
"""


@dataclass
class InFlight:
    thing: str
    job_id: str
    execution_number: int | None
    version_number: int | None
    phase: str
    image_sha256: str | None = None
    image_hash: str | None = None
    offset: int = 0


class Store:
    def __init__(self, path: str | Path) -> None:
        """Open (or create) the database; ConfigError, naming the file, if it is unusable."""
        self.path = Path(path)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.exists():
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            if not self.path.is_file():
                raise ConfigError(f"state database {self.path} is not a regular file: move it away")
            os.chmod(self.path, 0o600)  # SQLite gives its -wal and -shm files the same mode
        except OSError as exc:
            raise ConfigError(f"cannot create state database {self.path}: {exc.strerror}") from exc
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open state database {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            self._db.close()
            raise ConfigError(
                f"state database {self.path} is unusable ({exc}): move it away, or restore it"
            ) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def save(self, job: InFlight) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO inflight VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    job.thing,
                    job.job_id,
                    job.execution_number,
                    job.version_number,
                    job.phase,
                    job.image_sha256,
                    job.image_hash,
                    job.offset,
                    time.time(),
                ),
            )

    def inflight(self, thing: str) -> InFlight | None:
        with self._lock:
            row = self._db.execute(
                "SELECT thing, job_id, execution_number, version_number, phase, image_sha256,"
                " image_hash, offset FROM inflight WHERE thing = ?",
                (thing,),
            ).fetchone()
        return InFlight(*row) if row else None

    def finish(self, thing: str, job_id: str, status: str, reason: str = "") -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO finished VALUES (?,?,?,?,?)",
                    (thing, job_id, status, reason, time.time()),
                )
                self._db.execute(
                    "DELETE FROM inflight WHERE thing = ? AND job_id = ?", (thing, job_id)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def finished(self, thing: str, job_id: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT status FROM finished WHERE thing = ? AND job_id = ?", (thing, job_id)
            ).fetchone()
        return str(row[0]) if row else None

    def outcome(self, thing: str, job_id: str) -> tuple[str, str] | None:
        """(status, reason) of a finished job, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT status, reason FROM finished WHERE thing = ? AND job_id = ?",
                (thing, job_id),
            ).fetchone()
        return (str(row[0]), str(row[1] or "")) if row else None

    def history(self) -> list[tuple[str, str, str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT thing, job_id, status, reason FROM finished ORDER BY finished_at"
            ).fetchall()
        return [(str(a), str(b), str(c), str(d or "")) for a, b, c, d in rows]
