# The AWS IoT Jobs MQTT topics and payloads of one thing, without the client: the topic
# names and subscriptions, the request payloads, replies and notifications decoded, the
# execution statuses, and the service's rules for thing names, job ids and statusDetails.
# A pure codec (no I/O), used by mcu.jobs.  Runs on CircuitPython, MicroPython and CPython.

import json

# Job execution statuses.
QUEUED = "QUEUED"
IN_PROGRESS = "IN_PROGRESS"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
REJECTED = "REJECTED"
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "REMOVED", "CANCELED")

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
MAX_DETAIL_LEN = 1024


def _valid_name(name, extra, max_len):
    if not isinstance(name, str) or not 1 <= len(name) <= max_len:
        return False
    for c in name:
        if c not in _ID_CHARS and c not in extra:
            return False
    return True


def valid_thing_name(name):
    return _valid_name(name, ":", 128)


def valid_job_id(job_id):
    return _valid_name(job_id, "", 64)


def clean_details(details):
    """statusDetails as AWS takes them: str keys and values, values 1-1,024 characters
    without control characters.  Non-string values are formatted, empty ones dropped."""
    out = {}
    if not details:
        return out
    for key in details:
        if not _valid_name(key, ":", 128):
            raise ValueError("statusDetails key %r is not 1-128 of [a-zA-Z0-9:_-]" % (key,))
        value = details[key]
        if value is None:
            continue
        if not isinstance(value, str):
            value = str(value)
        chars = []
        for c in value[:MAX_DETAIL_LEN]:
            chars.append(" " if ord(c) < 32 or ord(c) == 127 else c)
        value = "".join(chars).strip()
        if value:
            out[key] = value
    return out


# -- topics ------------------------------------------------------------------------------


def topic_prefix(thing_name):
    """The thing's Jobs topics start with this; requests go to <prefix><base>."""
    return "$aws/things/" + thing_name + "/jobs/"


def topic_filters(prefix):
    """The subscriptions: the four reply filters, then notify-next, then notify."""
    return (
        prefix + "get/+",
        prefix + "start-next/+",
        prefix + "+/get/+",
        prefix + "+/update/+",
        prefix + "notify-next",
        prefix + "notify",
    )


# -- replies and notifications -----------------------------------------------------------


def _text(message):
    if isinstance(message, str):
        return message
    return str(bytes(message), "utf-8")


def decode(message):
    """A message's JSON object (str or bytes), or None if it is not one."""
    try:
        body = json.loads(_text(message))
    except (ValueError, UnicodeError):
        return None
    return body if isinstance(body, dict) else None


def notification(prefix, topic, message):
    """The body of a notification under prefix, or None (another thing's, or not JSON)."""
    if not topic.startswith(prefix):
        return None
    return decode(message)


def reply(prefix, topic, message):
    """(base, accepted, body) of a reply under prefix, base being the request's topic
    after it ("get", "j1/update", ...); None for another thing's reply or a bad one."""
    if not topic.startswith(prefix):
        return None
    rest = topic[len(prefix) :]
    cut = rest.rfind("/")
    outcome = rest[cut + 1 :]
    if outcome not in ("accepted", "rejected"):
        return None
    body = decode(message)
    if body is None:
        return None
    return rest[:cut], outcome == "accepted", body


# -- requests ----------------------------------------------------------------------------


def encode(payload, token):
    """The JSON text of a request: payload (a dict, given the clientToken) with token."""
    payload["clientToken"] = token
    return json.dumps(payload)


def start_next_request(status_details=None, step_timeout_min=None):
    """StartNextPendingJobExecution's payload."""
    payload = {}
    if status_details:
        payload["statusDetails"] = clean_details(status_details)
    if step_timeout_min is not None:
        payload["stepTimeoutInMinutes"] = step_timeout_min
    return payload


def describe_request(include_document=True):
    """DescribeJobExecution's payload."""
    return {"includeJobDocument": include_document}


def update_request(status, status_details=None, expected_version=None, step_timeout_min=None):
    """UpdateJobExecution's payload (the reply carries the execution's new state)."""
    payload = {"status": status, "includeJobExecutionState": True}
    if status_details is not None:
        payload["statusDetails"] = clean_details(status_details)
    if expected_version is not None:
        payload["expectedVersion"] = expected_version
    if step_timeout_min is not None:
        payload["stepTimeoutInMinutes"] = step_timeout_min
    return payload
