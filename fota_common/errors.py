"""The project's exceptions: one root, a shallow tree, shared by every package on the host.

    BridgeError                 anything raised on purpose; a CLI prints it as one line (exit 2)
    ├── LinkError               the serial link failed or the device stopped answering
    │   └── SmpTimeout          no reply within the deadline (after retries)
    ├── DeviceError             the device answered with an SMP error (exit 1)
    ├── ImageError              an image or key is unusable: malformed, bad hash or signature,
    │                           too large (``code`` is a stable word for programs)
    ├── LayoutError             a board layout file is unusable
    ├── FlashError              a simulated flash operation broke NOR rules, or its file failed
    ├── ConfigError             bad configuration or command-line input
    ├── DocumentError           a job document the bridge cannot act on (job REJECTED)
    ├── DownloadError           the image could not be fetched or failed its checks (job FAILED)
    ├── JobsError               an AWS IoT Jobs request failed for good (rejected, no reply)
    └── LocalJobsError          the local jobs service's store or broker connection failed

Code that runs on the MCU (``mcu/``) imports nothing from the host and keeps its own small
exceptions; host code that calls it turns them into one of these where they meet.

Expected outcomes of an update (confirmed, reverted) are values, not exceptions.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BridgeError",
    "ConfigError",
    "DeviceError",
    "DocumentError",
    "DownloadError",
    "FlashError",
    "ImageError",
    "JobsError",
    "LayoutError",
    "LinkError",
    "LocalJobsError",
    "SmpTimeout",
]


class BridgeError(Exception):
    """Root of every error the project raises on purpose."""


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


class ImageError(BridgeError, ValueError):
    """An image (or key) cannot be used: bad format, hash, signature, or too large.

    ``code`` names the problem for programs: the codec's ``truncated``, ``bad-magic``,
    ``bad-header``, ``bad-tlv-magic``, ``bad-tlv``, ``bad-version``, ``bad-key``, or
    ``unusable`` for the gateway's checks.
    """

    def __init__(self, message: str, code: str = "unusable") -> None:
        super().__init__(message)
        self.code = code


class LayoutError(BridgeError, ValueError):
    """A layout file is unusable; the message names the board and the reason."""


class FlashError(BridgeError):
    """A flash operation broke NOR rules (misaligned, out of range, not erased)."""


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


class JobsError(BridgeError):
    """A Jobs API request failed for good (rejected, or no reply)."""

    def __init__(self, message: str, code: str = "", state: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.execution_state = state


class LocalJobsError(BridgeError):
    """The local jobs service's job store or broker connection failed."""
