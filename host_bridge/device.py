"""One device's update flow: upload -> test -> reset -> watch it boot -> the truth.

The decisions live in :mod:`host_bridge.flow`, a state machine with no I/O; this module is
its driver: it performs each action the machine asks for with an :class:`SmpClient`, a
clock and a sleep (all injected), and feeds back what came of it.

The outcome is a value: ``confirmed`` (the new image runs and is confirmed), ``reverted``
(the old image is back), or ``failed`` with a reason a person can act on.  The flow checks
the device's own image state first, so calling :func:`update` again after an interruption
(a bridge restart, a dropped link) picks up where the device stands.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from fota_common.errors import BridgeError, DeviceError, LinkError
from host_bridge.flow import UpdateFlow
from host_bridge.flow_events import (
    POLICIES,
    Action,
    Confirm,
    EraseSecondary,
    Event,
    Finish,
    MarkTest,
    NoReply,
    ReadState,
    Refused,
    Replied,
    Reset,
    UpdateOptions,
    Upload,
    Uploaded,
    Wait,
    Waited,
)
from host_bridge.image.prepare import PreparedImage
from host_bridge.smp.client import SmpClient
from host_bridge.smp.upload import UploadResult, upload

# progress(phase, done, total): phases are uploading, testing, confirming
PhaseProgress = Callable[[str, int, int], None]

MAX_ACTIONS: Final = 1_000_000  # a bound on the loop; the machine's deadlines end it long before


@dataclass
class Outcome:
    status: str  # confirmed | reverted | failed
    reason: str = ""
    version: str | None = None  # what runs at the end
    hash: str | None = None
    phase: str = ""
    upload: UploadResult | None = None
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "confirmed"

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "status": self.status,
            "reason": self.reason,
            "version": self.version,
            "hash": self.hash,
            "phase": self.phase,
            "seconds": round(self.seconds, 3),
        }
        if self.upload is not None:
            d["upload"] = {
                "bytes": self.upload.size,
                "resumed_from": self.upload.resumed_from,
                "seconds": round(self.upload.seconds, 3),
                "rate": round(self.upload.rate),
                "window": self.upload.window,
                "chunk": self.upload.chunk,
            }
        return d


class DeviceUpdater:
    """Drives one :class:`UpdateFlow` on one device through an :class:`SmpClient`."""

    def __init__(
        self,
        client: SmpClient,
        options: UpdateOptions | None = None,
        progress: PhaseProgress | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.opt = options or UpdateOptions()
        if self.opt.policy not in POLICIES:
            raise ValueError(f"confirm policy must be one of {POLICIES}")
        self.progress = progress
        self.sleep = sleep
        self.clock = clock
        self.log: list[str] = []
        self._upload: UploadResult | None = None

    def _phase(self, phase: str, done: int = 0, total: int = 0) -> None:
        if self.progress:
            self.progress(phase, done, total)

    def update(self, image: PreparedImage) -> Outcome:
        t0 = self.clock()
        flow = UpdateFlow(image.hash, self.opt, t0)
        self.log = flow.log
        action: Action = flow.action
        phase = ""
        for _ in range(MAX_ACTIONS):
            if flow.phase != phase:
                phase = flow.phase
                self._phase(phase)
            if isinstance(action, Finish):
                return self._outcome(action, t0)
            action = flow.send(self._perform(action, image), self.clock())
        raise AssertionError("the update flow did not finish")  # its deadlines end it first

    def _perform(self, action: Action, image: PreparedImage) -> Event:
        """Do one action; what came of it as an event.  Only the bridge's own errors are
        caught: anything else is a bug and propagates."""
        if isinstance(action, Wait):
            self.sleep(action.seconds)
            return Waited()
        try:
            if isinstance(action, ReadState):
                return Replied(tuple(self.client.image_state()))
            if isinstance(action, Upload):
                up = upload(
                    self.client,
                    image.data,
                    window=self.opt.window,
                    buf_size=self.opt.buf_size,
                    progress=lambda d, t: self._phase("uploading", d, t),
                )
                self._upload = up
                self.log.append(f"uploaded {up.size} bytes in {up.seconds:.1f} s")
                return Uploaded(up.match)
            if isinstance(action, MarkTest):
                return Replied(tuple(self.client.state_write(action.hash, confirm=False)))
            if isinstance(action, Confirm):
                return Replied(tuple(self.client.state_write(None, confirm=True)))
            if isinstance(action, Reset):
                self.client.reset()
                return Replied()
            if isinstance(action, EraseSecondary):
                self.client.erase(1)
                return Replied()
        except LinkError as exc:
            return NoReply(str(exc))
        except BridgeError as exc:  # DeviceError, and ImageError from the upload's checks
            return Refused(str(exc))
        raise AssertionError(f"unknown action {action!r}")

    def _outcome(self, done: Finish, t0: float) -> Outcome:
        run = done.running
        return Outcome(
            status=done.status,
            reason=done.reason,
            version=run.version if run else None,
            hash=run.hash.hex() if run else None,
            phase=done.phase,
            upload=self._upload,
            seconds=self.clock() - t0,
            log=list(self.log),
        )


def update(
    client: SmpClient,
    image: PreparedImage,
    options: UpdateOptions | None = None,
    progress: PhaseProgress | None = None,
) -> Outcome:
    """Run the whole flow for one image on one device."""
    return DeviceUpdater(client, options, progress).update(image)


__all__ = ["POLICIES", "DeviceError", "DeviceUpdater", "Outcome", "UpdateOptions", "update"]
