"""One device's update flow as a state machine with no I/O (in the style of h11).

The machine asks for one action at a time (read the image state, upload, mark the image for
a test boot, reset, confirm, erase the secondary slot, wait, finish) and is told what came
of it: the device's reply, no reply, a refusal, or that the wait is over.  The driver
(:class:`host_bridge.device.DeviceUpdater`) does the I/O; every decision is made here, so a
test can feed the machine any sequence of lost, duplicated and late messages and check that
the outcome it finishes with is the truth of what the device runs and will boot next.

The rules, in short:
- Everything before the test reset is safe to repeat: link trouble there starts it again
  from a fresh state read, ``link_attempts`` times in all.
- A reset is never repeated blindly: a second one could revert the image the first booted
  before it confirms itself.  Another is sent only when the image state proves the first
  never arrived (the old image still runs and the new one is still pending) for
  ``reset_grace_s``, ``reset_attempts`` resets in all.
- When no reset ever arrives, the new image is erased from the secondary slot (Zephyr needs
  ``CONFIG_MCUMGR_GRP_IMG_ALLOW_ERASE_PENDING`` for that), so that nothing test-boots later
  with no job watching; the job fails with "the device never reset".
- The outcome follows what the device runs after the last reset, not the clock: firmware
  that confirms itself just after the deadline keeps running, and the job says so.
- Every wait ends at a deadline (``boot_timeout_s``, ``confirm_timeout_s``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from host_bridge.flow_events import (
    Action,
    Confirm,
    EraseSecondary,
    Event,
    Finish,
    FlowError,
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
    active,
    by_hash,
)
from host_bridge.smp.client import SlotState

Handler = Callable[[Event, float], Action]


class UpdateFlow:
    """The update of one image on one device.

    ``action`` is what to do now; after doing it, call :meth:`send` with what came of it
    and the current time; it returns the next action, until a :class:`Finish`.
    """

    def __init__(self, image_hash: bytes, options: UpdateOptions, now: float) -> None:
        self.hash = image_hash
        self.opt = options
        self.log: list[str] = []
        self.phase = "uploading"
        self.old: SlotState | None = None  # what ran before the update
        self.last: tuple[SlotState, ...] | None = None  # the latest image state read
        self._link_failures = 0
        self._resets = 0  # test resets sent
        self._revert_resets = 0
        self._erases = 0
        self._boot_deadline = 0.0
        self._confirm_deadline = 0.0
        self._grace_until: float | None = None
        self._confirm_acked = False  # the bridge's confirm was answered, the state unchanged
        self._why_clear = ""
        self._marked = False  # a test mark was sent (it may have landed)
        self._then: Handler = self._on_probe
        self._after_wait: Callable[[float], Action] | None = None
        self.action: Action = ReadState()

    # -- the driver's side --------------------------------------------------------------
    @property
    def done(self) -> bool:
        return isinstance(self.action, Finish)

    def send(self, event: Event, now: float) -> Action:
        """What came of the current action; returns the next one."""
        if self.done:
            raise FlowError("the update flow has already finished")
        expected: tuple[type, ...]
        if isinstance(self.action, Wait):
            expected = (Waited,)
        elif isinstance(self.action, Upload):
            expected = (Uploaded, NoReply, Refused)
        else:
            expected = (Replied, NoReply, Refused)
        if not isinstance(event, expected):
            raise FlowError(f"{type(event).__name__} does not answer {type(self.action).__name__}")
        if isinstance(event, Waited):
            assert self._after_wait is not None
            next_step, self._after_wait = self._after_wait, None
            self.action = next_step(now)
        else:
            if isinstance(event, Replied) and isinstance(self.action, ReadState | MarkTest):
                self.last = event.states
            self.action = self._then(event, now)
        return self.action

    # -- helpers ------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        self.log.append(msg)

    def _ask(self, action: Action, then: Handler) -> Action:
        self._then = then
        return action

    def _wait(self, seconds: float, then: Callable[[float], Action]) -> Action:
        self._after_wait = then
        return Wait(max(0.0, seconds))

    def _read(self, then: Handler) -> Callable[[float], Action]:
        return lambda _now: self._ask(ReadState(), then)

    def _running(self) -> SlotState | None:
        return active(self.last) if self.last is not None else None

    def _finish(self, status: str, reason: str, running: SlotState | None = None) -> Finish:
        return Finish(status, reason, running, self.phase)

    def _finish_known(self, status: str, reason: str) -> Finish:
        return self._finish(status, reason, self._running())

    def _is_new(self, s: SlotState | None) -> bool:
        return s is not None and s.hash == self.hash

    def _reset_lost(self, states: Sequence[SlotState]) -> bool:
        """The old image still runs and the new one still waits for its test boot: the test
        reset never reached the device (after any boot the swap, or its failure, changes
        this)."""
        run, staged = active(states), by_hash(states, self.hash)
        return (
            run is not None
            and not self._is_new(run)
            and staged is not None
            and staged.slot == 1
            and staged.pending
        )

    def _old_name(self) -> str:
        return self.old.version if self.old is not None else "the previous image"

    # -- before the test reset: safe to repeat --------------------------------------------
    def _link_trouble(self, reason: str, now: float) -> Action:
        self._link_failures += 1
        if self._link_failures >= max(1, self.opt.link_attempts):
            if self._marked:
                # The test mark may have landed: take it back before giving up.
                return self._clear(reason)
            return self._finish_known("failed", f"the device did not answer ({reason})")
        self._say(f"link trouble before the test boot ({reason}); asking the device again")
        return self._wait(self.opt.poll_s, self._read(self._on_probe))

    def _on_probe(self, ev: Event, now: float) -> Action:
        if isinstance(ev, NoReply):
            return self._link_trouble(ev.reason, now)
        if isinstance(ev, Refused):
            return self._finish_known("failed", ev.reason)
        assert isinstance(ev, Replied)
        run = active(ev.states)
        if run is not None and not self._is_new(run):
            self.old = run
        if self._is_new(run) and run is not None and run.confirmed:
            return self._finish_known("confirmed", "already running this image")
        if self._is_new(run):
            self._say("the new image already runs on its test boot: watching it")
            return self._watch_from(now)
        staged = by_hash(ev.states, self.hash)
        if staged is not None and staged.slot == 1:
            return self._mark()
        return self._ask(Upload(), self._on_upload)

    def _on_upload(self, ev: Event, now: float) -> Action:
        if isinstance(ev, NoReply):
            return self._link_trouble(ev.reason, now)
        if isinstance(ev, Refused):
            return self._finish_known("failed", ev.reason)
        assert isinstance(ev, Uploaded)
        if ev.match is False:
            return self._finish_known(
                "failed",
                "the device's hash of the uploaded image does not match; nothing was marked "
                f"for boot, the device keeps running {self._old_name()}",
            )
        return self._mark()

    def _mark(self) -> Action:
        self.phase = "testing"
        self._marked = True
        return self._ask(MarkTest(self.hash), self._on_mark)

    def _on_mark(self, ev: Event, now: float) -> Action:
        if isinstance(ev, NoReply):
            return self._link_trouble(ev.reason, now)
        if isinstance(ev, Refused):
            return self._finish_known("failed", ev.reason)
        assert isinstance(ev, Replied)
        staged = by_hash(ev.states, self.hash)
        if staged is not None and staged.slot == 1 and not staged.pending:
            return self._finish_known(
                "failed",
                "the device acknowledged the test mark but does not report the new image "
                "pending; nothing was reset",
            )
        return self._reset_for_test()

    # -- the test reset and the boot after it ---------------------------------------------
    def _reset_for_test(self) -> Action:
        self._resets += 1
        return self._ask(Reset(), self._on_test_reset)

    def _on_test_reset(self, ev: Event, now: float) -> Action:
        if isinstance(ev, Refused):
            return self._clear(f"the device refused to reset ({ev.reason})")
        if isinstance(ev, NoReply):
            self._say("no reply to reset (the device may have reset before answering)")
        self._boot_deadline = now + self.opt.boot_timeout_s
        return self._wait(self.opt.poll_s, self._read(self._on_test_boot))

    def _on_test_boot(self, ev: Event, now: float) -> Action:
        if isinstance(ev, NoReply | Refused):
            if now < self._boot_deadline:
                return self._wait(self.opt.poll_s, self._read(self._on_test_boot))
            return self._finish(
                "failed",
                f"the device did not answer within {self.opt.boot_timeout_s:g} s after "
                f"reset ({ev.reason})",
            )
        assert isinstance(ev, Replied)
        run = active(ev.states)
        if self._reset_lost(ev.states):
            return self._reset_not_taken(now, self._on_test_boot, self._test_reset_lost)
        self._grace_until = None
        if self._is_new(run):
            return self._watch_from(now)
        if run is None:
            if now < self._boot_deadline:
                return self._wait(self.opt.poll_s, self._read(self._on_test_boot))
            return self._finish_known("failed", "the device reports no running image")
        return self._not_running_new(ev.states)

    def _reset_not_taken(
        self, now: float, reread: Handler, give_up: Callable[[], Action]
    ) -> Action:
        """The state says the reset has not happened: wait ``reset_grace_s`` (a device may
        answer a little while before it resets), then reset again or give up."""
        if self._grace_until is None:
            self._grace_until = now + self.opt.reset_grace_s
        if now < self._grace_until:
            return self._wait(self.opt.poll_s, self._read(reread))
        self._grace_until = None
        return give_up()

    def _test_reset_lost(self) -> Action:
        if self._resets < max(1, self.opt.reset_attempts):
            self._say("the device did not reset (the request was lost): resetting again")
            return self._reset_for_test()
        return self._clear(
            f"the device never reset ({self._resets} reset request"
            f"{'s' if self._resets != 1 else ''} had no effect)"
        )

    def _not_running_new(self, states: Sequence[SlotState]) -> Action:
        """The device booted and runs something other than the new image."""
        run = active(states)
        assert run is not None
        self.phase = "confirming"
        if by_hash(states, self.hash) is None:
            return self._finish_known(
                "reverted",
                f"MCUboot did not boot the new image (it found it invalid and erased it); "
                f"the device runs {run.version}",
            )
        return self._finish_known(
            "reverted",
            f"the new firmware did not confirm itself; MCUboot reverted to {run.version}",
        )

    # -- nothing may boot later unwatched: erase the pending image ------------------------
    def _clear(self, why: str) -> Action:
        self._why_clear = why
        self._erases += 1
        self._say(f"{why}: erasing the new image from slot 1 so it cannot boot unwatched")
        return self._ask(EraseSecondary(), self._on_erase)

    def _on_erase(self, ev: Event, now: float) -> Action:
        if isinstance(ev, Refused):
            return self._finish_known(
                "failed",
                f"{self._why_clear}; the device refused to erase the new image from slot 1 "
                f"({ev.reason}): it stays marked for a test boot at the next reset",
            )
        if isinstance(ev, NoReply):
            self._say(f"no reply to the erase ({ev.reason})")
        return self._ask(ReadState(), self._on_erase_check)

    def _on_erase_check(self, ev: Event, now: float) -> Action:
        if isinstance(ev, NoReply | Refused):
            if self._erases < max(1, self.opt.link_attempts):
                return self._wait(self.opt.poll_s, self._read(self._on_erase_check))
            return self._finish(
                "failed",
                f"{self._why_clear}; the device stopped answering while the new image was "
                f"being erased from slot 1 ({ev.reason}): it may still be marked for a test boot",
            )
        assert isinstance(ev, Replied)
        run = active(ev.states)
        if self._is_new(run):
            self._say("the reset took effect after all: the new image runs on its test boot")
            return self._watch_from(now)
        if self._reset_lost(ev.states):
            if self._erases < max(1, self.opt.link_attempts):
                self._erases += 1
                return self._ask(EraseSecondary(), self._on_erase)
            return self._finish_known(
                "failed",
                f"{self._why_clear}; the new image could not be erased from slot 1: it stays "
                "marked for a test boot at the next reset",
            )
        kept = run.version if run is not None else self._old_name()
        return self._finish_known(
            "failed",
            f"{self._why_clear}; the new image was erased from slot 1, the device keeps "
            f"running {kept}",
        )

    # -- the trial: the new image runs and must be confirmed ------------------------------
    def _watch_from(self, now: float) -> Action:
        self.phase = "confirming"
        self._confirm_deadline = now + self.opt.confirm_timeout_s
        states = self.last or ()
        return self._watch(states, now)

    def _watch(self, states: Sequence[SlotState], now: float) -> Action:
        run = active(states)
        if run is not None and not self._is_new(run):
            return self._not_running_new(states)
        if run is not None and run.confirmed:
            return self._finish_known("confirmed", "")
        if run is not None and self.opt.policy == "bridge":
            return self._ask(Confirm(), self._on_confirm)
        return self._watch_later(now)

    def _watch_later(self, now: float) -> Action:
        if now >= self._confirm_deadline:
            return self._reset_to_revert()
        return self._wait(self.opt.poll_s, self._read(self._on_watch))

    def _on_watch(self, ev: Event, now: float) -> Action:
        if isinstance(ev, NoReply | Refused):
            return self._watch_later(now)  # rebooting (a crash or a watchdog): keep watching
        assert isinstance(ev, Replied)
        return self._watch(ev.states, now)

    def _on_confirm(self, ev: Event, now: float) -> Action:
        if isinstance(ev, NoReply | Refused):
            # Confirming twice is harmless: try again at the next poll, until the deadline.
            self._say(f"no confirm from the device ({ev.reason}); trying again")
            return self._watch_later(now)
        assert isinstance(ev, Replied)
        run = active(ev.states)
        if self._is_new(run) and run is not None and run.confirmed:
            self._say("confirmed by the bridge")
            return self._finish("confirmed", "", run)
        if not self._confirm_acked:
            self._say("the device acknowledged the confirm but reports the image unconfirmed")
        self._confirm_acked = True
        return self._watch_later(now)

    # -- never confirmed: reset so that MCUboot reverts, and report what came back ---------
    def _reset_to_revert(self) -> Action:
        if self._revert_resets == 0:
            self._say("the new firmware did not confirm itself in time: resetting to revert")
        self._revert_resets += 1
        return self._ask(Reset(), self._on_revert_reset)

    def _late(self) -> str:
        late = f"the new firmware did not confirm itself within {self.opt.confirm_timeout_s:g} s"
        if self._confirm_acked:
            late += (
                " (the device acknowledged the bridge's confirm but kept reporting it unconfirmed)"
            )
        return late

    def _on_revert_reset(self, ev: Event, now: float) -> Action:
        if isinstance(ev, Refused):
            return self._finish_known(
                "failed",
                f"{self._late()}, and the device refused the reset that would revert it "
                f"({ev.reason}): it runs the unconfirmed image until its next reset, which "
                f"reverts to {self._old_name()}",
            )
        self._boot_deadline = now + self.opt.boot_timeout_s
        return self._wait(self.opt.poll_s, self._read(self._on_revert_boot))

    def _on_revert_boot(self, ev: Event, now: float) -> Action:
        if isinstance(ev, NoReply | Refused):
            if now < self._boot_deadline:
                return self._wait(self.opt.poll_s, self._read(self._on_revert_boot))
            return self._finish(
                "failed",
                f"{self._late()}; the device did not answer within "
                f"{self.opt.boot_timeout_s:g} s after the reset meant to revert it",
            )
        assert isinstance(ev, Replied)
        run = active(ev.states)
        if self._is_new(run) and run is not None and run.confirmed:
            self._grace_until = None
            self._say("the new firmware confirmed itself after the deadline: it stays, confirmed")
            return self._finish_known("confirmed", "")
        if self._is_new(run):
            return self._reset_not_taken(now, self._on_revert_boot, self._revert_reset_lost)
        self._grace_until = None
        if run is None:
            if now < self._boot_deadline:
                return self._wait(self.opt.poll_s, self._read(self._on_revert_boot))
            return self._finish_known(
                "failed", f"{self._late()}; the device reports no running image"
            )
        return self._finish_known("reverted", f"{self._late()}; MCUboot reverted to {run.version}")

    def _revert_reset_lost(self) -> Action:
        if self._revert_resets < max(1, self.opt.reset_attempts):
            self._say("the device did not reset to revert (the request was lost): resetting again")
            return self._reset_to_revert()
        run = self._running()
        name = run.version if run is not None else "the new image"
        return self._finish_known(
            "failed",
            f"{self._late()}, and the device never reset to revert it: it still runs the "
            f"unconfirmed {name}; its next reset reverts to {self._old_name()}",
        )


__all__ = ["UpdateFlow"]
