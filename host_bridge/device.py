"""One device's update flow: upload -> test -> reset -> watch it boot -> the truth.

The outcome is a value: ``confirmed`` (the new image runs and is confirmed), ``reverted``
(the old image is back), or ``failed`` with a reason a person can act on.  Each step
checks the device's own image state first, so calling :func:`update` again after an
interruption (a bridge restart, a dropped link) picks up where the device stands.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from host_bridge.errors import BridgeError, DeviceError, LinkError
from host_bridge.image.prepare import PreparedImage
from host_bridge.smp.client import SlotState, SmpClient
from host_bridge.smp.upload import UploadResult, upload

POLICIES = ("device", "bridge")

# progress(phase, done, total): phases are uploading, testing, confirming
Progress = Callable[[str, int, int], None]


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


@dataclass
class UpdateOptions:
    policy: str = "device"
    confirm_timeout_s: float = 30.0  # how long the new firmware has to confirm itself
    boot_timeout_s: float = 30.0  # how long a reboot may take before the device answers
    window: int | None = None
    buf_size: int | None = None
    poll_s: float = 0.2


def active(states: list[SlotState]) -> SlotState | None:
    return next((s for s in states if s.active), None)


def by_hash(states: list[SlotState], h: bytes) -> SlotState | None:
    return next((s for s in states if s.hash == h), None)


class DeviceUpdater:
    """Drives one update on one device through an :class:`SmpClient`."""

    def __init__(
        self,
        client: SmpClient,
        options: UpdateOptions | None = None,
        progress: Progress | None = None,
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

    def _say(self, msg: str) -> None:
        self.log.append(msg)

    def _phase(self, phase: str, done: int = 0, total: int = 0) -> None:
        if self.progress:
            self.progress(phase, done, total)

    def update(self, image: PreparedImage) -> Outcome:
        t0 = self.clock()
        phase = "uploading"
        up: UploadResult | None = None
        try:
            states = self.client.image_state()
            old = active(states)
            run = active(states)
            if run is not None and run.hash == image.hash and run.confirmed:
                return self._done("confirmed", "already running this image", states, t0, phase)
            if run is None or run.hash != image.hash:
                staged = by_hash(states, image.hash)
                if staged is None or staged.slot != 1:
                    up = upload(
                        self.client,
                        image.data,
                        window=self.opt.window,
                        buf_size=self.opt.buf_size,
                        progress=lambda d, t: self._phase("uploading", d, t),
                    )
                    if up.match is False:
                        return self._done(
                            "failed", "the device's hash of the uploaded image does not match",
                            [], t0, phase, up,
                        )
                    self._say(f"uploaded {up.size} bytes in {up.seconds:.1f} s")
                phase = "testing"
                self._phase(phase)
                self.client.state_write(image.hash, confirm=False)
                self._reset()
                states = self._wait_for_boot()
            phase = "confirming"
            self._phase(phase)
            return self._settle(image, old, states, t0, up)
        except BridgeError as exc:
            return self._done("failed", str(exc), [], t0, phase, up)

    # -- steps -------------------------------------------------------------------------
    def _reset(self) -> None:
        try:
            self.client.reset()
        except LinkError:
            # The reply may be lost to the reset itself; the wait below finds out.
            self._say("no reply to reset (the device may have reset before answering)")

    def _wait_for_boot(self) -> list[SlotState]:
        deadline = self.clock() + self.opt.boot_timeout_s
        self.sleep(self.opt.poll_s)
        last: Exception | None = None
        while self.clock() < deadline:
            try:
                return self.client.image_state()
            except LinkError as exc:
                last = exc
                self.sleep(self.opt.poll_s)
        raise LinkError(
            f"the device did not answer within {self.opt.boot_timeout_s:g} s after reset"
            + (f" ({last})" if last else "")
        )

    def _settle(
        self,
        image: PreparedImage,
        old: SlotState | None,
        states: list[SlotState],
        t0: float,
        up: UploadResult | None,
    ) -> Outcome:
        deadline = self.clock() + self.opt.confirm_timeout_s
        while True:
            run = active(states)
            if run is not None and run.hash != image.hash:
                return self._done(
                    "reverted",
                    f"the new firmware did not confirm itself; MCUboot reverted to {run.version}",
                    states, t0, "confirming", up,
                )
            if run is not None and run.confirmed:
                return self._done("confirmed", "", states, t0, "confirming", up)
            if run is not None and self.opt.policy == "bridge":
                states = self.client.state_write(None, confirm=True)
                self._say("confirmed by the bridge")
                continue
            if self.clock() >= deadline:
                break
            self.sleep(self.opt.poll_s)
            try:
                states = self.client.image_state()
            except LinkError:
                states = []  # rebooting (a crash or a watchdog): keep watching
        # Never confirmed: reset so MCUboot reverts, and report what came back.
        self._say("the new firmware did not confirm itself in time: resetting to revert")
        self._reset()
        try:
            states = self._wait_for_boot()
        except LinkError as exc:
            return self._done("failed", str(exc), [], t0, "confirming", up)
        run = active(states)
        what = f"MCUboot reverted to {run.version}" if run and run.hash != image.hash else (
            "the device still runs the unconfirmed image"
        )
        return self._done(
            "reverted" if run and run.hash != image.hash else "failed",
            f"the new firmware did not confirm itself within "
            f"{self.opt.confirm_timeout_s:g} s; {what}",
            states, t0, "confirming", up,
        )

    def _done(
        self,
        status: str,
        reason: str,
        states: list[SlotState],
        t0: float,
        phase: str,
        up: UploadResult | None = None,
    ) -> Outcome:
        run = active(states)
        return Outcome(
            status=status,
            reason=reason,
            version=run.version if run else None,
            hash=run.hash.hex() if run else None,
            phase=phase,
            upload=up,
            seconds=self.clock() - t0,
            log=list(self.log),
        )


def update(
    client: SmpClient, image: PreparedImage, options: UpdateOptions | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Run the whole flow for one image on one device."""
    return DeviceUpdater(client, options, progress).update(image)


__all__ = ["DeviceError", "DeviceUpdater", "Outcome", "UpdateOptions", "update"]
