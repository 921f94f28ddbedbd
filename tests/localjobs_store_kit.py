"""Shared fixtures and checks for the job store tests: a store in tmp on an injected clock,
and helpers that unwrap accepted results and rejections."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


OK = "accepted"
BAD = m.INVALID_STATE_TRANSITION
