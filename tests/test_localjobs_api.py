"""The local jobs request front end (``api.py``) without a broker: topic routing, and
property tests that no topic or payload makes it raise and every request gets one reply."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from localjobs_service_kit import DOC, FakeClock

from localjobs import model as m
from localjobs.api import JobsApi, Route, parse_topic
from localjobs.store import JobStore


# -- the front end without a broker ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("topic", "route"),
    [
        ("$aws/things/t1/jobs/get", Route("t1", "get")),
        ("$aws/things/t1/jobs/start-next", Route("t1", "start-next")),
        ("$aws/things/t1/jobs/$next/get", Route("t1", "describe", "$next")),
        ("$aws/things/t1/jobs/j1/get", Route("t1", "describe", "j1")),
        ("$aws/things/t1/jobs/j1/update", Route("t1", "update", "j1")),
        ("$aws/things/t1/jobs/get/get", Route("t1", "describe", "get")),
        ("$aws/things/t1/jobs/j1/delete", Route("t1", "unknown")),
        ("$aws/things/t1/jobs/a/b/c", Route("t1", "unknown")),
        ("$aws/things/t1/jobs", Route("t1", "unknown")),
        ("$aws/things/t1/jobs/get/accepted", None),
        ("$aws/things/t1/jobs/j1/update/rejected", None),
        ("$aws/things/t1/jobs/notify", None),
        ("$aws/things/t1/jobs/notify-next", None),
        ("$aws/things/t1/shadow/get", None),
        ("other/topic", None),
    ],
)
def test_topic_routes(topic: str, route: Route | None) -> None:
    assert parse_topic(topic) == route


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobsApi]:
    """A front end on a throwaway store, shared by the property tests."""
    store = JobStore(tmp_path_factory.mktemp("api") / "jobs.sqlite3", FakeClock())
    store.create_job("j1", ["prop-thing"], json.dumps(DOC))
    yield JobsApi(store)
    store.close()


@given(topic=st.text(max_size=120), payload=st.binary(max_size=300))
def test_front_end_never_raises(api: JobsApi, topic: str, payload: bytes) -> None:
    reply = api.handle(topic, payload)
    if reply is not None:
        assert reply.topic.endswith(("/accepted", "/rejected"))
        assert json.dumps(reply.payload)
        assert parse_topic(reply.topic) is None  # never answered again


@given(
    suffix=st.sampled_from(["get", "start-next", "j1/get", "$next/get", "j1/update"]),
    body=st.dictionaries(
        st.sampled_from(
            [
                "status",
                "statusDetails",
                "expectedVersion",
                "executionNumber",
                "stepTimeoutInMinutes",
                "includeJobDocument",
                "includeJobExecutionState",
                "clientToken",
            ]
        ),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.text(max_size=20),
            st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
        ),
    ),
)
def test_any_request_body_gets_one_reply(api: JobsApi, suffix: str, body: dict[str, Any]) -> None:
    reply = api.handle(f"$aws/things/prop-thing/jobs/{suffix}", json.dumps(body).encode())
    assert reply is not None
    if reply.topic.endswith("/rejected"):
        assert reply.payload["code"] in m.ERROR_CODES
