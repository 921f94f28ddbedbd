"""The job store's limits: statusDetails, thing names, job ids, documents and pending-list
length, with property tests that the model's request checks never raise.
Pure tier: SQLite in tmp, no broker."""

from __future__ import annotations

import json
from typing import Any

import localjobs_store_kit
import pytest
from hypothesis import given
from hypothesis import strategies as st
from localjobs_store_kit import DOC, FakeClock, execution, ok, refused

from fota_common.errors import ConfigError
from localjobs import model as m
from localjobs.store import JobStore

clock = localjobs_store_kit.clock  # the kit's fixture, bound here for pytest to find
store = localjobs_store_kit.store  # the kit's fixture, bound here for pytest to find


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
