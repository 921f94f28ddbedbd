"""The job document as it was received: its length counted on the raw MQTT payload.

AWS IoT Jobs limits a job document to 32 kB of text. Re-serialising the parsed document gives
another length (``json.dumps`` escapes non-ASCII text as ``\\uXXXX`` and adds spaces), so a
document at the limit could be refused for text it never had, or pass with more than it may
hold. The length is therefore measured on the characters of the ``jobDocument`` value exactly
as they arrived in the payload.

A pure codec: text in, a count out. The client stores the count in the execution it hands on,
under :data:`DOCUMENT_CHARS`, a key AWS never sends (AWS's keys are camelCase words).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

__all__ = ["DOCUMENT_CHARS", "annotate_execution", "received_length"]

DOCUMENT_CHARS: Final = "bridge:documentChars"

# The key, then its colon: where the value's raw text begins.
_KEY = re.compile(r'"jobDocument"\s*:\s*')
_DECODER = json.JSONDecoder()


def received_length(payload: str | bytes, document: object) -> int | None:
    """Characters of the ``jobDocument`` value in ``payload`` whose decoded value is
    ``document``; ``None`` when the payload does not hold it (then the caller falls back to a
    compact encoding)."""
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
    for match in _KEY.finditer(payload):
        try:
            value, end = _DECODER.raw_decode(payload, match.end())
        except ValueError:
            continue  # the key's text inside a string, not a key
        if value == document:
            return end - match.end()
    return None


def annotate_execution(payload: str | bytes, body: dict[str, Any]) -> None:
    """Record the received length of ``body["execution"]["jobDocument"]`` in the execution."""
    execution = body.get("execution")
    if not isinstance(execution, dict) or "jobDocument" not in execution:
        return
    length = received_length(payload, execution["jobDocument"])
    if length is not None:
        execution[DOCUMENT_CHARS] = length
