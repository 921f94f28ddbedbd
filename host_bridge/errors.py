"""The bridge's exceptions: one root, a shallow tree.

    BridgeError                 anything the bridge reports as a one-line error (exit 2)
    ├── LinkError               the serial link failed or the device stopped answering
    │   └── SmpTimeout          no reply within the deadline (after retries)
    ├── DeviceError             the device answered with an SMP error (exit 1)
    ├── ImageError              the image is unusable: bad hash, signature, size (exit 2)
    ├── ConfigError             bad configuration or command-line input (exit 2)
    ├── DocumentError           a job document the bridge cannot act on (job REJECTED)
    └── DownloadError           the image could not be fetched or failed its checks (job FAILED)

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


class DocumentError(BridgeError):
    """A job document is malformed or asks for something the bridge refuses."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DownloadError(BridgeError):
    """The image could not be downloaded, or the download failed its size or hash checks.

    ``transient`` is true when trying again later may succeed (network trouble, server errors),
    false when the same job will fail the same way (hash mismatch, refused URL, 404).
    The reason never holds a URL's query string.
    """

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
