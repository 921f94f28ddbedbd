# The AWS IoT Jobs device API over MQTT, on the microcontroller, with an
# adafruit_minimqtt MQTT client.  Runs on CircuitPython and MicroPython, and on CPython
# for tests.
#
#     from mcu import jobs
#     myjobs = jobs.Jobs(mqtt_client, "my-thing")   # mqtt_client already connected
#     job = myjobs.start_next()                      # a Job, or None
#     if job is not None:
#         job.update(jobs.Job.SUCCEEDED, {"note": "done"})
#
# Every request carries its own clientToken; its reply (/accepted or /rejected) is matched
# by that token, and only replies under this thing's topics are taken (one MQTT client may
# serve several things).  Replies are waited for with the client's loop(), bounded by a
# deadline: there is no thread on the MCU, so nothing arrives unless loop() runs.
#
# The API mirrors the Zerynth aws.iot.jobs library (Jobs.changed(), Jobs.list(),
# Job.describe(), Job.update()) and adds the requests the FOTA flow needs: pending(),
# start_next(), describe(job_id), update(job_id, ...).  The topics and payloads themselves
# are mcu.jobs_codec's; the statuses (jobs.SUCCEEDED, ...) are importable from here too.

import time

from mcu import jobs_codec as codec
from mcu.jobs_codec import (
    FAILED,
    IN_PROGRESS,
    QUEUED,
    REJECTED,
    SUCCEEDED,
    clean_details,  # noqa: F401 - jobs.clean_details: what update() sends
    valid_job_id,
    valid_thing_name,
)


class JobsError(Exception):
    """A request got no reply in time, or one the device cannot go on from."""

    def __init__(self, message, code=None):
        Exception.__init__(self, message)
        self.code = code


# -- time: deadlines that survive long uptimes on every port ---------------------------

if hasattr(time, "monotonic_ns"):  # CPython, CircuitPython

    def _ticks():
        return time.monotonic_ns() // 1000000

    def _diff(a, b):
        return a - b

elif hasattr(time, "ticks_ms"):  # MicroPython: wrapping ticks

    def _ticks():
        return time.ticks_ms()  # type: ignore[attr-defined]

    def _diff(a, b):
        return time.ticks_diff(a, b)  # type: ignore[attr-defined]

else:  # pragma: no cover

    def _ticks():
        return int(time.monotonic() * 1000)

    def _diff(a, b):
        return a - b


class Deadline:
    def __init__(self, seconds):
        self._start = _ticks()
        self._ms = int(seconds * 1000)

    def remaining_s(self):
        left = self._ms - _diff(_ticks(), self._start)
        return left / 1000 if left > 0 else 0

    def expired(self):
        return self.remaining_s() <= 0


def _random24():
    """A per-boot number for clientTokens (tokens stay unique across the device's resets)."""
    try:
        import random  # optional: not every port has it (hence here, under try)

        return random.getrandbits(24)
    except (ImportError, OSError, AttributeError):
        pass
    try:
        import os  # optional: os.urandom is missing on some ports

        return int.from_bytes(os.urandom(3), "big")
    except (ImportError, OSError, AttributeError):
        return _ticks() & 0xFFFFFF


class Job:
    """One job execution of this thing, as the last reply described it.

    Attributes: jobid (also job_id), status, status_details, version (the execution's
    versionNumber, sent as expectedVersion by update()), execution_number, document.
    """

    QUEUED = QUEUED
    IN_PROGRESS = IN_PROGRESS
    FAILED = FAILED
    SUCCEEDED = SUCCEEDED
    REJECTED = REJECTED

    def __init__(self, jobs, jobid, execution=None):
        self.jobs = jobs
        self.jobid = jobid
        self.status = None
        self.status_details = {}
        self.version = None
        self.execution_number = None
        self.document = None
        if execution:
            self._load(execution)

    @property
    def job_id(self):
        return self.jobid

    def _load(self, execution):
        self.status = execution.get("status", self.status)
        details = execution.get("statusDetails")
        if details is not None:
            self.status_details = details
        self.version = execution.get("versionNumber", self.version)
        self.execution_number = execution.get("executionNumber", self.execution_number)
        if "jobDocument" in execution:
            self.document = execution["jobDocument"]

    def describe(self):
        """Fetch status, version, statusDetails and document; True on success, False when
        the service has no pending execution of it (gone, or already terminal)."""
        try:
            job = self.jobs.describe(self.jobid)
        except JobsError as exc:
            if exc.code is None:
                raise  # no reply at all
            return False
        if job is None:
            return False
        self.status = job.status
        self.status_details = job.status_details
        self.version = job.version
        self.execution_number = job.execution_number
        self.document = job.document
        return True

    def update(self, status, status_details=None):
        """Set the execution's status (and statusDetails); True when the service took it.

        Sends the known versionNumber as expectedVersion, so a concurrent change (an
        operator's cancel, another client) makes this return False instead of winning.
        """
        reply = self.jobs.update(self.jobid, status, status_details, self.version)
        if reply is None:
            return False
        state = reply.get("executionState")
        if state:
            self._load(state)
        else:
            self.status = status
        return True

    def __str__(self):
        return "%s@%s" % (self.jobid, self.jobs.thing_name)


class Jobs:
    """The Jobs device API for one thing over a connected adafruit_minimqtt client.

    timeout_s bounds the wait for each reply; poll_s is the loop() step (at least the
    client's socket_timeout, which minimqtt enforces).  Requests are published with qos.
    """

    def __init__(self, mqtt, thing_name, timeout_s=20, poll_s=None, qos=1):
        if not valid_thing_name(thing_name):
            raise ValueError("thing name must be 1-128 of [a-zA-Z0-9:_-]")
        self.mqtt = mqtt
        self.thing_name = thing_name
        self.timeout_s = timeout_s
        if poll_s is None:
            poll_s = getattr(mqtt, "_socket_timeout", 1)
        self.poll_s = poll_s
        self.qos = qos
        self.prefix = codec.topic_prefix(thing_name)
        self.rejected = None  # the body of the last /rejected reply
        self.next_execution = None  # the execution of the last notify-next
        self._changed = False
        self._subscribed = False
        self._outstanding = {}  # clientToken -> reply topic base ("get", "j1/update")
        self._replies = {}  # clientToken -> (accepted, body)
        self._seq = 0
        self._boot = _random24()
        self._stash = []  # the client's other subscriptions, kept across disconnect()
        self.filters = codec.topic_filters(self.prefix)
        for f in self.filters[:4]:
            mqtt.add_topic_callback(f, self._on_reply)
        mqtt.add_topic_callback(self.filters[4], self._on_notify_next)
        mqtt.add_topic_callback(self.filters[5], self._on_notify)

    # -- subscriptions and connection ----------------------------------------------------

    def subscribe(self):
        """Subscribe to the reply and notify-next topics (done before the first request)."""
        self.mqtt.subscribe([(f, self.qos) for f in self.filters])
        self._subscribed = True

    def close(self):
        """Remove this object's topic callbacks from the client (and unsubscribe)."""
        for f in self.filters:
            try:
                self.mqtt.remove_topic_callback(f)
            except KeyError:
                pass
        if self._subscribed and self.mqtt.is_connected():
            self.mqtt.unsubscribe([f for f in self.filters])
        self._subscribed = False

    def disconnect(self):
        """Close the MQTT connection (to free a TLS socket's memory for a download)."""
        mine = self.filters
        topics = list(getattr(self.mqtt, "_subscribed_topics", ()))
        self._stash = [t for t in topics if t not in mine]
        if self.mqtt.is_connected():
            self.mqtt.disconnect()
        self._subscribed = False

    def reconnect(self):
        """Connect again after disconnect(), renewing this thing's subscriptions and the
        client's other subscriptions (at QoS 0, as minimqtt's own reconnect() does)."""
        if not self.mqtt.is_connected():
            self.mqtt.connect()
        for t in self._stash:
            self.mqtt.subscribe(t)
        self._stash = []
        self.subscribe()

    # -- notifications -------------------------------------------------------------------

    def poll(self, timeout_s=None):
        """Run the client's loop once (timeout_s, at least poll_s) to take notifications."""
        if timeout_s is None or timeout_s < self.poll_s:
            timeout_s = self.poll_s
        if not self._subscribed:
            self.subscribe()
        self.mqtt.loop(timeout_s)

    def changed(self):
        """True once after a notification that announced a pending job (notify-next with
        an execution, or notify listing QUEUED jobs), as in the seed."""
        ret = self._changed
        self._changed = False
        return ret

    def _on_notify_next(self, client, topic, message):
        body = codec.notification(self.prefix, topic, message)
        if body is None:
            return
        execution = body.get("execution")
        self.next_execution = execution
        if execution:
            self._changed = True

    def _on_notify(self, client, topic, message):
        body = codec.notification(self.prefix, topic, message)
        if body is None:
            return
        lists = body.get("jobs")
        if isinstance(lists, dict) and lists.get("QUEUED"):
            self._changed = True

    # -- request / reply -----------------------------------------------------------------

    def _on_reply(self, client, topic, message):
        r = codec.reply(self.prefix, topic, message)
        if r is None:
            return  # another thing's reply, or not one
        base, accepted, body = r
        token = body.get("clientToken")
        if token is None or self._outstanding.get(token) != base:
            return  # not ours, or a reply on the wrong topic
        self._replies[token] = (accepted, body)

    def _token(self):
        self._seq += 1
        return "fota-%06x-%d" % (self._boot, self._seq)

    def request(self, base, payload, timeout_s=None):
        """Publish payload on <prefix><base>, wait for <base>/accepted or /rejected.

        Returns (accepted, body).  Raises JobsError when no reply comes in time.
        """
        if not self._subscribed:
            self.subscribe()
        token = self._token()
        self._outstanding[token] = base
        try:
            self.mqtt.publish(self.prefix + base, codec.encode(payload, token), qos=self.qos)
            limit = self.timeout_s if timeout_s is None else timeout_s
            deadline = Deadline(limit)
            polls = int(limit / self.poll_s) + 2
            while token not in self._replies and polls > 0 and not deadline.expired():
                self.mqtt.loop(self.poll_s)
                polls -= 1
            if token not in self._replies:
                raise JobsError("no reply to %s within %d s" % (base, limit))
            accepted, body = self._replies.pop(token)
        finally:
            self._outstanding.pop(token, None)
            self._replies.pop(token, None)
        if not accepted:
            self.rejected = body
        return accepted, body

    def _fail(self, what, body):
        code = body.get("code", "?")
        raise JobsError("%s rejected: %s %s" % (what, code, body.get("message", "")), code)

    def pending(self):
        """GetPendingJobExecutions: (in_progress, queued) lists of execution summaries."""
        ok, body = self.request("get", {})
        if not ok:
            self._fail("get", body)
        return body.get("inProgressJobs") or [], body.get("queuedJobs") or []

    def list(self):
        """As in the seed: (IN_PROGRESS, QUEUED) lists of Job objects (not yet described)."""
        inp, inq = self.pending()
        return ([Job(self, s["jobId"], s) for s in inp], [Job(self, s["jobId"], s) for s in inq])

    def start_next(self, status_details=None, step_timeout_min=None):
        """StartNextPendingJobExecution: the next IN_PROGRESS or QUEUED execution, now
        IN_PROGRESS, as a Job with its document; None when nothing is pending."""
        payload = codec.start_next_request(status_details, step_timeout_min)
        ok, body = self.request("start-next", payload)
        if not ok:
            self._fail("start-next", body)
        execution = body.get("execution")
        if not execution:
            return None
        return Job(self, execution["jobId"], execution)

    def describe(self, job_id, include_document=True):
        """DescribeJobExecution: a Job (with document), or None if there is no such job.

        job_id may be "$next" (the next pending execution, left as it is)."""
        if job_id != "$next" and not valid_job_id(job_id):
            raise ValueError("job id must be 1-64 of [a-zA-Z0-9_-]")
        ok, body = self.request(job_id + "/get", codec.describe_request(include_document))
        if not ok:
            if body.get("code") == "ResourceNotFound":
                return None
            self._fail(job_id + "/get", body)
        execution = body.get("execution")
        if not execution:
            return None
        return Job(self, execution.get("jobId", job_id), execution)

    def update(
        self, job_id, status, status_details=None, expected_version=None, step_timeout_min=None
    ):
        """UpdateJobExecution.  Returns the accepted reply (a dict with executionState), or
        None when the service rejected it; self.rejected then holds {code, message, ...}.
        """
        if not valid_job_id(job_id):
            raise ValueError("job id must be 1-64 of [a-zA-Z0-9_-]")
        payload = codec.update_request(status, status_details, expected_version, step_timeout_min)
        ok, body = self.request(job_id + "/update", payload)
        return body if ok else None
