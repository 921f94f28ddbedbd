"""The bridge's exceptions: one root, a shallow tree.

    BridgeError                 anything the bridge reports as a one-line error (exit 2)
    ├── LinkError               the serial link failed or the device stopped answering
    │   └── SmpTimeout          no reply within the deadline (after retries)
    ├── DeviceError             the device answered with an SMP error (exit 1)
    ├── ImageError              the image is unusable: bad hash, signature, size (exit 2)
    └── ConfigError             bad configuration or command-line input (exit 2)

Expected outcomes of an update (confirmed, reverted) are values, not exceptions.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""


class LinkError(BridgeError):
    """The serial link failed or the device stopped answering."""


class SmpTimeout(LinkError):
    """No reply within the deadline, after the configured retries."""


class DeviceError(BridgeError):
    """The device answered a request with an SMP error."""

    def __init__(self, message: str, rc: int, group: int | None = None) -> None:
        super().__init__(message)
        self.rc = rc
        self.group = group


class ImageError(BridgeError):
    """The image cannot be sent: bad format, hash, signature, or too large."""


class ConfigError(BridgeError):
    """Bad configuration or command-line input."""
