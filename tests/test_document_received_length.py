"""The job document's length limit is measured on the text AWS sent, not on a re-encoding.

The oracle is the payload itself: the characters between ``"jobDocument":`` and the end of
its value, counted by the test on a payload it builds by hand (not with our codec).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from host_bridge.jobs.client import BrokerConfig, JobsClient
from host_bridge.jobs.documents import MAX_DOCUMENT_CHARS, DocumentError, parse_document
from host_bridge.jobs.received import DOCUMENT_CHARS, received_length

SHA = "ab" * 32


def doc_with_note(note: str) -> dict[str, Any]:
    return {"operation": "fota", "url": "https://example.com/a.img", "sha256": SHA, "note": note}


def raw_text(note: str) -> str:
    """The document as a service would send it: compact, UTF-8, no escapes."""
    return (
        '{"operation":"fota","url":"https://example.com/a.img","sha256":"'
        + SHA
        + '","note":"'
        + note
        + '"}'
    )


def payload_for(document_text: str) -> bytes:
    text = (
        '{"clientToken":"t","timestamp":1,"execution":{"jobId":"j1","status":"QUEUED",'
        '"versionNumber":1,"executionNumber":1,"jobDocument":' + document_text + "}}"
    )
    return text.encode("utf-8")


def test_non_ascii_text_at_the_limit_is_accepted() -> None:
    # Every "é" is one character as sent, six as json.dumps escapes it by default.
    base = len(raw_text(""))
    note = "é" * (MAX_DOCUMENT_CHARS - base)
    text = raw_text(note)
    assert len(text) == MAX_DOCUMENT_CHARS
    assert len(json.dumps(doc_with_note(note))) > MAX_DOCUMENT_CHARS  # the old measure
    got = received_length(payload_for(text), json.loads(text))
    assert got == MAX_DOCUMENT_CHARS
    parse_document(json.loads(text), raw_length=got)  # no DocumentError


def test_whitespace_as_sent_counts() -> None:
    # A document written with generous indentation: its compact form fits, the text does not.
    document = doc_with_note("x" * (MAX_DOCUMENT_CHARS - len(raw_text("")) - 10))
    text = json.dumps(document, indent=40)
    assert len(text) > MAX_DOCUMENT_CHARS
    got = received_length(payload_for(text), document)
    assert got == len(text)
    try:
        parse_document(document, raw_length=got)
    except DocumentError as exc:
        assert str(len(text)) in str(exc)
    else:
        raise AssertionError("an over-long document was accepted")


def test_the_key_inside_a_string_is_not_the_document() -> None:
    document = {"operation": "other", "note": 'see "jobDocument": {} below'}
    text = json.dumps(document)
    payload = b'{"x":"\\"jobDocument\\": 1","execution":{"jobDocument":' + text.encode() + b"}}"
    assert received_length(payload, document) == len(text)
    assert received_length(b"not json", document) is None
    assert received_length(b"\xff\xfe", document) is None


def test_the_client_hands_on_the_length_as_received() -> None:
    got: list[dict[str, Any] | None] = []

    class Mqtt:
        def __getattr__(self, name: str) -> Any:
            return lambda *a, **k: None

    client = JobsClient(
        BrokerConfig("127.0.0.1", 1883),
        ["thing-1"],
        lambda thing, execution: got.append(execution),
        mqtt_factory=lambda client_id: Mqtt(),
    )
    text = raw_text("ü" * 100)
    msg = SimpleNamespace(topic="$aws/things/thing-1/jobs/notify-next", payload=payload_for(text))
    client._on_message(None, None, msg)
    (execution,) = got
    assert execution is not None
    assert execution[DOCUMENT_CHARS] == len(text)
