"""The upload's congestion control: chunk size, window and timeouts, learnt from the line.

Chunks halve when one is lost (smaller chunks lose less on a noisy line) and double again
after a run of deliveries; the reply timeout is the window's wire time plus four times the
measured latency, with a floor.
"""

from __future__ import annotations

import time


class UploadState:
    """Where an upload stands, and what the line has taught it (chunk size, latency)."""

    def __init__(
        self,
        size: int,
        first_n: int,
        cont_n: int,
        window: int,
        baud: int,
        timeout_s: float | None,
    ) -> None:
        self.size = size
        self.first_max = self.first_n = first_n
        self.chunk_max = self.chunk = cont_n
        self.window = window
        self.wire_rate = baud / 10
        self.fixed_timeout = timeout_s
        self.latency = 0.05  # EWMA of send -> reply time, seconds
        self.streak = 0
        self.sent_bytes = 0
        self.resumed_from = 0
        self.resyncs = 0
        self.total_retries = 0
        self.restart()

    def restart(self) -> None:
        self.acked = 0
        self.next_off = 0
        self.retries = 0  # consecutive failures, against max_retries
        self.stuck = 0  # re-synchronisations in a row without the device taking data
        self.inflight: list[tuple[int, int, int, float]] = []  # (seq, off, len, sent at)

    def timeout(self) -> float:
        """How long to wait for the oldest reply: the window's wire time plus latency."""
        if self.fixed_timeout is not None:
            return self.fixed_timeout
        wire = (self.chunk * 1.4 + 64) * (self.window + 1) / self.wire_rate
        return min(CONT_TIMEOUT_S, max(MIN_TIMEOUT_S, wire + 4 * self.latency))

    def lost(self) -> None:
        """A chunk or its reply was lost: smaller chunks lose less on a noisy line."""
        self.chunk = max(MIN_CHUNK, self.chunk // 2 // 8 * 8)
        self.streak = 0

    def delivered(self, sent_at: float) -> None:
        self.latency = 0.8 * self.latency + 0.2 * (time.monotonic() - sent_at)
        self.streak += 1
        if self.streak >= GROW_AFTER and self.chunk < self.chunk_max:
            self.chunk = min(self.chunk_max, self.chunk * 2)
            self.streak = 0


MIN_CHUNK = 64
STUCK_LIMIT = 64  # a healthy noisy line makes progress long before this many resyncs
GROW_AFTER = 8  # deliveries in a row before the chunk size doubles again
FIRST_CHUNK_MAX = 512
MIN_TIMEOUT_S = 0.1  # the floor; the window's wire time and 4x the measured latency come on top
CONT_TIMEOUT_S = 5.0
PROBE_AFTER_S = 1.0  # first chunk: after this, an echo tells "busy erasing" from "lost"
