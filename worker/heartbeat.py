"""The worker parent's watch: heartbeats, dead children, cancels past their grace, time limits.

It runs in the Celery parent (MainProcess), which forks the children that run jobs. It
names the jobs its children really run: a job whose child died (the OOM killer, a hard
kill) is released at the next beat, long before the worker itself would be missed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import timedelta

from service.db import Database
from service.models import FailReason, JobStatus, utcnow
from service.settings import Settings
from service.store.devices import heartbeat
from service.store.jobs import finish_job, release_lost_job, running_jobs_of_worker
from worker.probe import Probe

log = logging.getLogger("gpulab.worker")

# Held while the parent talks to the database, and taken by every fork: a child is never
# forked in the middle of the heartbeat's transaction. (SQLite keeps its file-lock state in
# process memory; a child forked while a lock was held inherits a lock that never clears, and
# its own connections then fail with "database is locked".)
fork_guard = threading.Lock()

UNHELD_BEATS = 3


def _reset_guard_in_child() -> None:
    global fork_guard
    fork_guard = threading.Lock()


os.register_at_fork(before=lambda: fork_guard.acquire(), after_in_parent=lambda: fork_guard.release(),
                    after_in_child=_reset_guard_in_child)


def is_child_alive(pid: int, parent: int) -> bool:
    """Whether `pid` runs and is a child of `parent` (so a reused pid is never signalled)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    state, ppid = fields[0], int(fields[1])
    return ppid == parent and state != "Z"


class Watch:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        worker_id: str,
        on_health: Callable[[bool], None] = lambda healthy: None,
        on_lost: Callable[[], None] = lambda: None,
        sample: Callable[[], None] = lambda: None,
        requests: Callable[[], dict[int, tuple[int, int]]] | None = None,
        probe: Probe | None = None,
    ):
        self.settings = settings
        self.db = db
        self.worker_id = worker_id
        self.on_health = on_health
        self.on_lost = on_lost  # this incarnation was declared lost: it must leave
        self.sample = sample
        # What each child really runs, as the Celery parent handed it out: pid -> (job, attempt).
        # A kill is addressed to that triple, never to whatever a job row's pid runs now.
        # Without it (None), the rows' pids are trusted as they are.
        self.requests = requests
        self.probe = probe
        self.unheld: dict[tuple[int, int], int] = {}  # beats a running row's child did not hold it
        self.stop = threading.Event()
        self.healthy = True
        self.lost = False
        self.kill_sent: dict[tuple[int, int, int], int] = {}  # (job, attempt, pid) -> signal sent
        self.pid_jobs: dict[int, int] = {}  # pid of a child -> the job it runs

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name="gpulab-heartbeat", daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        while not self.stop.wait(self.settings.heartbeat_s):
            self.beat()

    def beat(self) -> None:
        """One round: check children, enforce cancels and limits, write the heartbeat."""
        with fork_guard:
            self._beat()

    def _beat(self) -> None:
        probe = self.probe
        try:
            running = self.check_jobs()
            with self.db.writing() as session:
                alive = heartbeat(session=session, worker_id=self.worker_id, running_job_ids=running,
                                  probe_ok_at=probe.received_at if probe else None,
                                  stalled=bool(probe and probe.stalled))
            if not alive and self.stop.is_set():
                return  # this worker's own warm shutdown recorded its stop: not lost, leaving already
            if not alive and not self.lost:
                self.lost = True
                # Declared lost while this process lives (a long pause, the database away past
                # the worker timeout): its device is offline and its jobs were released. A new
                # incarnation registers afresh; this one would never be resumed.
                log.error("this worker was declared lost by the dispatcher: leaving to be restarted")
                self.on_lost()
            if not alive:
                return
            self.sample()
        except Exception as exc:
            log.warning("heartbeat failed: %s", exc)
            alive = False
        if alive != self.healthy:
            # A worker that cannot write its heartbeat stops taking jobs until it can again.
            self.healthy = alive
            log.warning("heartbeat %s: %s consuming", "restored" if alive else "lost",
                        "resuming" if alive else "pausing")
            self.on_health(alive)

    def check_jobs(self) -> list[int]:
        """The ids of jobs this worker's children really run; release or end the others."""
        me = os.getpid()
        now = utcnow()
        running: list[int] = []
        pid_jobs: dict[int, int] = {}
        with self.db.reading() as session:
            jobs = running_jobs_of_worker(session=session, worker_id=self.worker_id)
        handed = self.requests() if self.requests else None
        unheld: dict[tuple[int, int], int] = {}
        for job in jobs:
            pid = job.pid or 0
            if not is_child_alive(pid, me):
                self.kill_sent.pop((job.id, job.attempt, pid), None)
                if job.started_at and now - job.started_at > timedelta(seconds=job.timeout_s):
                    with self.db.writing() as session:
                        finish_job(session=session, job_id=job.id, attempt=job.attempt,
                                   status=JobStatus.failed, reason=FailReason.timeout,
                                   error=f"killed after its time limit of {job.timeout_s} s")
                else:
                    with self.db.writing() as session:
                        release_lost_job(session=session, job_id=job.id, attempt=job.attempt,
                                         why=f"its process (pid {pid}) died")
                continue
            key = (job.id, job.attempt)
            runs_now = key if handed is None else handed.get(pid)
            if runs_now != key:
                # Its process does not hold this job (it moved on, or the task ended without
                # recording the end). The parent learns of a child's new job a moment after the
                # claim commits, so only a row unheld for several beats runs nowhere.
                unheld[key] = self.unheld.get(key, 0) + 1
                if runs_now is not None or unheld[key] >= UNHELD_BEATS:
                    with self.db.writing() as session:
                        release_lost_job(session=session, job_id=job.id, attempt=job.attempt,
                                         why=f"its process (pid {pid}) no longer runs it")
                    continue
            running.append(job.id)
            pid_jobs[pid] = job.id
            grace = timedelta(seconds=self.settings.cancel_grace_s)
            overdue_cancel = job.cancel_requested_at is not None and now - job.cancel_requested_at > grace
            limit = timedelta(seconds=job.timeout_s) + grace
            overdue_time = job.started_at is not None and now - job.started_at > limit
            if (overdue_cancel or overdue_time) and runs_now == key:
                self._kill((job.id, job.attempt, pid), "cancel" if overdue_cancel else "time limit")
        self.pid_jobs = pid_jobs
        self.unheld = unheld
        return running

    def _kill(self, target: tuple[int, int, int], why: str) -> None:
        # TERM first; KILL at the next beat if the child still runs that job and attempt.
        job_id, attempt, pid = target
        if self.requests and self.requests().get(pid) != (job_id, attempt):
            return  # the child ended that job since the check: never signal its next one
        sig = signal.SIGKILL if self.kill_sent.get(target) == signal.SIGTERM else signal.SIGTERM
        log.warning("job %s attempt %s: %s overdue, sending %s to pid %s", job_id, attempt, why, sig.name, pid)
        with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
            os.kill(pid, sig)
            self.kill_sent[target] = sig
