"""The context a job gets inside a worker: what it reports goes to the database in batches.

Log lines, progress and metrics are buffered and committed at most every
`event_flush_s` seconds (or `event_flush_lines` events), never inside a job step's
transaction, so a chatty job costs a few short commits a second. What is still buffered
when the job ends goes in its outcome's commit (`buffered`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import SQLAlchemyError, StatementError

from jobs.context import FileContext
from service.db import Database
from service.store.events import record_events
from service.store.jobs import is_cancel_requested
from worker.retry import is_transient

log = logging.getLogger("gpulab.worker")

STOP_POLL_S = 1.0
MAX_LINE = 4000
MAX_BUFFER = 100_000  # events kept while the database is away (a few tens of MB at most)


def raise_time_limit(exc: SQLAlchemyError) -> None:
    """Raise the time limit again if SQLAlchemy wrapped it; a database error is left to the caller.

    Celery raises the soft time limit from a signal handler wherever the job's thread is. Landing
    while SQLAlchemy builds a statement's execution context, it comes back as a StatementError
    (an SQLAlchemyError): the handlers for database faults below would drop it, or fail the job
    as the member's error, and the command would never be stopped for its time limit.
    """
    if isinstance(exc, StatementError) and isinstance(exc.orig, SoftTimeLimitExceeded):
        raise exc.orig from None


class WorkerContext(FileContext):
    def __init__(
        self,
        *,
        db: Database,
        job_id: int,
        attempt: int,
        device: str,
        seed: int,
        artifacts_root: Path,
        flush_s: float,
        flush_lines: int,
    ):
        super().__init__(artifacts_root=artifacts_root, job_id=job_id, device=device, seed=seed)
        self.db = db
        self.attempt = attempt
        self.flush_s = flush_s
        self.flush_lines = flush_lines
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._last_poll = 0.0
        self._stop = False
        self._dropped = 0

    # -- what the job reports ---------------------------------------------------------------

    def log(self, message: str) -> None:
        for line in str(message).splitlines() or [""]:
            self._add({"type": "log", "message": line[:MAX_LINE]})

    def progress(self, step: int, total: int, message: str | None = None) -> None:
        self._add({"type": "progress", "message": message or "",
                   "data": {"step": int(step), "total": int(total)}})

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self._add({"type": "metric", "message": "",
                   "data": {"name": str(name)[:100], "value": float(value),
                            "step": None if step is None else int(step)}})

    @property
    def stopped(self) -> bool:
        """Whether the job saw a cancel (or lost its attempt) through should_stop()."""
        return self._stop

    def should_stop(self) -> bool:
        if self._stop:
            return True
        now = time.monotonic()
        # Lines a quiet job printed last would otherwise wait for its next line (or its end).
        if self._buffer and now - self._last_flush >= self.flush_s:
            self._flush_unless_away()
        if now - self._last_poll >= STOP_POLL_S:
            self._last_poll = now
            try:
                with self.db.reading() as session:
                    self._stop = is_cancel_requested(session=session, job_id=int(self.job_id),
                                                     attempt=self.attempt)
            except SQLAlchemyError as exc:
                raise_time_limit(exc)
                if not is_transient(exc):
                    raise
                # The database is away: the job goes on; a cancel is seen once it is back.
        return self._stop

    # -- batching ----------------------------------------------------------------------------

    def buffered(self) -> list[dict[str, Any]]:
        """The events not yet written: at the job's end they go in its outcome's commit, so
        they cost no commit of their own. They stay buffered until `forget(n)`."""
        self._note_dropped()
        return list(self._buffer)

    def forget(self, n: int) -> None:
        """Drop the first `n` buffered events: they were written with the outcome."""
        del self._buffer[:n]

    def _note_dropped(self) -> None:
        if self._dropped and len(self._buffer) < MAX_BUFFER:
            self._buffer.append({"type": "log", "message": f"gpulab: {self._dropped} line(s) dropped "
                                 "while the database was unavailable"})
            self._dropped = 0

    def _add(self, event: dict[str, Any]) -> None:
        if len(self._buffer) >= MAX_BUFFER:
            self._dropped += 1  # a very long outage: the newest lines go, the job does not
            return
        self._buffer.append(event)
        if (len(self._buffer) >= self.flush_lines
                or time.monotonic() - self._last_flush >= self.flush_s):
            self._flush_unless_away()

    def _flush_unless_away(self) -> None:
        try:
            self.flush()
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            # The database is away: the lines stay buffered for the next flush, and the
            # job goes on (its last flush, before the outcome, waits for the database).

    def flush(self) -> None:
        """Commit the buffered events (then they are published to live followers).

        On a passing database fault the events stay buffered and the error is raised.
        """
        self._last_flush = time.monotonic()
        self._note_dropped()
        if not self._buffer:
            return
        batch = list(self._buffer)
        try:
            with self.db.writing() as session:
                record_events(session=session, job_id=int(self.job_id), attempt=self.attempt, events=batch)
        except SQLAlchemyError as exc:
            raise_time_limit(exc)  # the batch stays buffered for the last flush
            if is_transient(exc):
                raise
            # Not a passing fault: this batch can never be stored; the job must not stall on it.
            log.error("job %s: %d event(s) could not be stored and were dropped: %s",
                      self.job_id, len(batch), str(exc).splitlines()[0][:200])
        del self._buffer[:len(batch)]
