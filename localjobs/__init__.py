"""The local AWS IoT Jobs service: the device-side Jobs MQTT API on a mosquitto broker.

    store.py       the Jobs state machine with AWS's error codes, over the database
    database.py    SQLite: the schema, the connection, the queries
    model.py       statuses, the transition table, limits and payloads (pure)
    api.py         one MQTT request in, one reply out (topic parsing, request checks)
    service.py     the MQTT front end: replies, notify / notify-next, step-timeout sweeps
    fileserver.py  HTTPS file server for job images with presigned-style URLs
    pki.py         a local CA and the certificates it signs
    cli.py         ``fota-bridge jobs serve|create|list|describe|cancel``

Errors: :class:`LocalJobsError` (a :class:`~fota_common.errors.BridgeError`) when the store
or the broker connection fails; bad operator input is a ``ConfigError``.  A device's bad
request is never an exception: it is a ``Rejection`` value answered on ``.../rejected``.
"""

from __future__ import annotations

from fota_common.errors import LocalJobsError

__all__ = ["LocalJobsError"]
