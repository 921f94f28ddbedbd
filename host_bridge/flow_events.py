"""The update flow's vocabulary: the actions it asks for, the events it is told, its options.

Pure data; the machine that uses them is :class:`host_bridge.flow.UpdateFlow`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from host_bridge.smp.client import SlotState

__all__ = [
    "POLICIES",
    "Action",
    "Confirm",
    "EraseSecondary",
    "Event",
    "Finish",
    "FlowError",
    "MarkTest",
    "NoReply",
    "ReadState",
    "Refused",
    "Replied",
    "Reset",
    "UpdateOptions",
    "Upload",
    "Uploaded",
    "Wait",
    "Waited",
    "active",
    "by_hash",
]

POLICIES: Final = ("device", "bridge")

# -- actions: what the machine asks the driver to do ----------------------------------------


@dataclass(frozen=True)
class ReadState:
    """Read the image state (SMP image group, command 0)."""


@dataclass(frozen=True)
class Upload:
    """Upload the image into the secondary slot (resuming where the device stands)."""


@dataclass(frozen=True)
class MarkTest:
    """Mark the uploaded image for a test boot (image state write, confirm=false)."""

    hash: bytes


@dataclass(frozen=True)
class Confirm:
    """Confirm the running image (image state write, confirm=true, no hash)."""


@dataclass(frozen=True)
class Reset:
    """Reset the device (OS group, command 5); sent once per action, never retried."""


@dataclass(frozen=True)
class EraseSecondary:
    """Erase the secondary slot (image erase, slot 1)."""


@dataclass(frozen=True)
class Wait:
    """Let ``seconds`` pass, then send :class:`Waited`."""

    seconds: float


@dataclass(frozen=True)
class Finish:
    """The end: ``status`` is confirmed, reverted or failed; ``running`` what runs now (None
    when the device stopped answering)."""

    status: str
    reason: str
    running: SlotState | None
    phase: str


Action = ReadState | Upload | MarkTest | Confirm | Reset | EraseSecondary | Wait | Finish

# -- events: what came of the action --------------------------------------------------------


@dataclass(frozen=True)
class Replied:
    """The device answered; ``states`` is the image state its reply carried (state reads
    and state writes), empty for replies without one."""

    states: tuple[SlotState, ...] = ()


@dataclass(frozen=True)
class Uploaded:
    """The upload finished; ``match`` is the device's verdict on the image hash (None when
    the device does not say)."""

    match: bool | None


@dataclass(frozen=True)
class NoReply:
    """No reply: a timeout or a link error.  The request may or may not have arrived."""

    reason: str


@dataclass(frozen=True)
class Refused:
    """The device answered with an error."""

    reason: str


@dataclass(frozen=True)
class Waited:
    """The wait asked for is over."""


Event = Replied | Uploaded | NoReply | Refused | Waited


class FlowError(Exception):
    """The machine was driven against its contract (a bug in the driver, not the device)."""


@dataclass
class UpdateOptions:
    policy: str = "device"  # who confirms the new image: the firmware itself, or the bridge
    confirm_timeout_s: float = 30.0  # how long the new firmware has to confirm itself
    boot_timeout_s: float = 30.0  # how long a reboot may take before the device answers
    window: int | None = None
    buf_size: int | None = None
    poll_s: float = 0.2
    link_attempts: int = 3  # tries of the steps before the test reset, on link trouble
    reset_attempts: int = 3  # resets sent while the device shows it never got one
    reset_grace_s: float = 2.0  # how long "no reset happened" must hold before another

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"confirm policy must be one of {POLICIES}, not {self.policy!r}")


def active(states: Sequence[SlotState]) -> SlotState | None:
    return next((s for s in states if s.active), None)


def by_hash(states: Sequence[SlotState], h: bytes) -> SlotState | None:
    return next((s for s in states if s.hash == h), None)
