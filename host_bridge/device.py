"""One device's update flow: upload -> test -> reset -> watch it boot -> the truth.

The outcome is a value: ``confirmed`` (the new image runs and is confirmed), ``reverted``
(the old image is back), or ``failed`` with a reason a person can act on.  Each step
checks the device's own image state first, so calling :func:`update` again after an
interruption (a bridge restart, a dropped link) picks up where the device stands.

A reset is never repeated blindly (a second one could revert the image the first booted
before it confirms itself).  Only when the image state proves the reset never arrived (the
old image still runs and the new one is still pending) is it sent again; a lost reply
alone changes nothing.
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
    link_attempts: int = 3  # tries of the steps before the test reset, on link trouble
    reset_attempts: int = 3  # resets sent while the device shows it never got one
    reset_grace_s: float = 2.0  # how long "no reset happened" must hold before another


def active(states: list[SlotState]) -> SlotState | None:
    return next((s for s in states if s.active), None)


def by_hash(states: list[SlotState], h: bytes) -> SlotState | None:
    return next((s for s in states if s.hash == h), None)


def _reset_lost(states: list[SlotState], image: PreparedImage) -> bool:
    """The old image still runs and the new one still waits for its test boot: the test
    reset never reached the device (after any boot the swap, or its failure, changes this)."""
    run = active(states)
    staged = by_hash(states, image.hash)
    return (
        run is not None
        and run.hash != image.hash
        and staged is not None
        and staged.slot == 1
        and staged.pending
    )


def _still_on_trial(states: list[SlotState], image: PreparedImage) -> bool:
    """The new image still runs unconfirmed: the reverting reset never reached the device."""
    run = active(states)
    return run is not None and run.hash == image.hash and not run.confirmed


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
            staged = self._stage(image, t0)
            if isinstance(staged, Outcome):
                return staged
            old, states, up, test_boot = staged
            if test_boot:
                phase = "testing"
                self._reset()
                states = self._wait_for_boot()
                states = self._until_reset_taken(states, lambda s: _reset_lost(s, image))
            phase = "confirming"
            self._phase(phase)
            return self._settle(image, old, states, t0, up)
        except BridgeError as exc:
            return self._done("failed", str(exc), [], t0, phase, up)

    def _stage(
        self, image: PreparedImage, t0: float
    ) -> Outcome | tuple[SlotState | None, list[SlotState], UploadResult | None, bool]:
        """Everything before the test reset: upload unless staged, then mark it for test.

        These steps are safe to repeat (the device says where it stands), so link trouble
        here starts them again from a fresh state read, ``link_attempts`` times in all.
        After the reset nothing is repeated blindly: a second reset could revert the image
        the first one booted.  Returns (old image, states, upload, whether to reset).
        """
        up: UploadResult | None = None
        for attempt in range(1, max(1, self.opt.link_attempts) + 1):
            try:
                states = self.client.image_state()
                old = run = active(states)
                if run is not None and run.hash == image.hash and run.confirmed:
                    return self._done(
                        "confirmed", "already running this image", states, t0, "uploading"
                    )
                if run is not None and run.hash == image.hash:
                    return old, states, up, False  # booted on test already: watch it
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
                            "failed",
                            "the device's hash of the uploaded image does not match",
                            [],
                            t0,
                            "uploading",
                            up,
                        )
                    self._say(f"uploaded {up.size} bytes in {up.seconds:.1f} s")
                self._phase("testing")
                self.client.state_write(image.hash, confirm=False)
                return old, states, up, True
            except LinkError as exc:
                if attempt >= self.opt.link_attempts:
                    raise
                self._say(f"link trouble before the test boot ({exc}); asking the device again")
                self.sleep(self.opt.poll_s)
        raise AssertionError("unreachable")  # the loop returns or raises

    # -- steps -------------------------------------------------------------------------
    def _reset(self) -> None:
        try:
            self.client.reset()
        except LinkError:
            # The reply may be lost to the reset itself; the wait below finds out.
            self._say("no reply to reset (the device may have reset before answering)")

    def _until_reset_taken(
        self, states: list[SlotState], lost: Callable[[list[SlotState]], bool]
    ) -> list[SlotState]:
        """Send the reset again while the device shows it never got one.

        A reset request can be lost on a noisy line, and its missing reply looks the same
        as a reply lost to the reset itself.  ``lost(states)`` tells them apart from the
        image state; it must hold for ``reset_grace_s`` (a device may answer a little
        while before it resets) before another reset is sent.
        """
        for _ in range(max(0, self.opt.reset_attempts - 1)):
            if not lost(states):
                return states
            deadline = self.clock() + self.opt.reset_grace_s
            while lost(states) and self.clock() < deadline:
                self.sleep(self.opt.poll_s)
                try:
                    states = self.client.image_state()
                except LinkError:
                    states = self._wait_for_boot()  # silent: it is rebooting after all
            if not lost(states):
                return states
            self._say("the device did not reset (the request was lost): resetting again")
            self._reset()
            states = self._wait_for_boot()
        return states

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
                    states,
                    t0,
                    "confirming",
                    up,
                )
            if run is not None and run.confirmed:
                return self._done("confirmed", "", states, t0, "confirming", up)
            if run is not None and self.opt.policy == "bridge":
                try:
                    states = self.client.state_write(None, confirm=True)
                except LinkError as exc:
                    # Confirming twice is harmless: try again until the deadline.
                    self._say(f"no reply to the confirm ({exc}); trying again")
                    states = []
                else:
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
            states = self._until_reset_taken(states, lambda s: _still_on_trial(s, image))
        except LinkError as exc:
            return self._done("failed", str(exc), [], t0, "confirming", up)
        run = active(states)
        what = (
            f"MCUboot reverted to {run.version}"
            if run and run.hash != image.hash
            else ("the device still runs the unconfirmed image")
        )
        return self._done(
            "reverted" if run and run.hash != image.hash else "failed",
            f"the new firmware did not confirm itself within "
            f"{self.opt.confirm_timeout_s:g} s; {what}",
            states,
            t0,
            "confirming",
            up,
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
    client: SmpClient,
    image: PreparedImage,
    options: UpdateOptions | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Run the whole flow for one image on one device."""
    return DeviceUpdater(client, options, progress).update(image)


__all__ = ["DeviceError", "DeviceUpdater", "Outcome", "UpdateOptions", "update"]
