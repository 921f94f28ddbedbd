"""``from aws.iot import jobs``: the seed's ``Jobs(thing)`` over mcu.jobs (``thing.mqtt``,
``thing.thingname``)."""

from typing import Any

from mcu import jobs as _jobs
from mcu.jobs import Job, JobsError

__all__ = ["Job", "Jobs", "JobsError"]


def Jobs(thing: Any) -> _jobs.Jobs:
    return _jobs.Jobs(thing.mqtt, thing.thingname, timeout_s=10)
