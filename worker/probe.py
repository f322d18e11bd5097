"""Liveness is consumption: the worker proves, through Redis, that it still takes messages.

A worker's process and its database heartbeat can be healthy while its broker consumer is
dead: after a Redis restart under load, kombu's consumer may never read again (celery
issues #8030, #8091, #10205). So the parent sends a tiny probe task to its own device queue
when it has received nothing for a while, and notes every message its consumer receives
(probe or job). A probe that was accepted by Redis but has not come back within
`probe_timeout_s`, while a slot was free to take it, means the consumer is dead: the device
is marked stalled (nothing is sent to it) and the worker leaves, to be restarted by
`gpulab up` or its container's restart policy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from service.models import utcnow

log = logging.getLogger("gpulab.worker")


class Probe:
    def __init__(
        self,
        *,
        send: Callable[[], None],
        busy: Callable[[], bool],
        period_s: float,
        timeout_s: float,
    ):
        self.send = send  # puts one probe on this worker's own queue
        self.busy = busy  # whether every slot runs a job (then nothing can be fetched)
        self.period_s = period_s
        self.timeout_s = timeout_s
        self.received_at: datetime | None = None  # wall time of the last message received
        self._last_received = time.monotonic()
        self._last_sent = 0.0
        self._waiting_since: float | None = None  # a probe Redis accepted, not back yet
        self._busy_at = 0.0
        self.stalled = False
        self.paused = False  # consumption stopped on purpose (the database away): no verdict

    def received(self) -> None:
        """The consumer received a message from this worker's queue (called in the consumer)."""
        self.received_at = utcnow()
        self._last_received = time.monotonic()
        self._waiting_since = None
        self.stalled = False

    def check(self) -> bool:
        """Send a probe when one is due; True when the consumer is judged dead."""
        now = time.monotonic()
        if self.busy() or self.paused:
            # A full worker fetches nothing, by design (prefetch 1), and a paused one does not
            # read its queue: the wait starts afresh.
            self._busy_at = now
            return self.stalled
        quiet = now - self._last_received >= self.period_s
        if quiet and not self.stalled and now - self._last_sent >= self.period_s:
            try:
                self.send()
            except Exception as exc:
                # Redis is down: nobody can consume now, and leaving would not help.
                log.warning("probe not sent (%s); consumption unproven", exc)
            else:
                self._last_sent = now
                if self._waiting_since is None:
                    self._waiting_since = now
        if self._waiting_since is not None:
            waited = now - max(self._waiting_since, self._busy_at)
            if waited > self.timeout_s and not self.stalled:
                log.error("no message from this worker's own queue for %.1f s although a probe was "
                          "sent: its consumer is dead", waited)
                self.stalled = True
        return self.stalled

    def run(self, stop: threading.Event, on_stalled: Callable[[], None]) -> threading.Thread:
        """Check every second in a thread of its own (a send may block on a dead broker)."""

        def loop() -> None:
            while not stop.wait(min(1.0, self.period_s)):
                if self.check():
                    on_stalled()

        thread = threading.Thread(target=loop, name="gpulab-probe", daemon=True)
        thread.start()
        return thread
