"""The dispatcher: places pending jobs on devices and sends each to its device's queue.

One is active at a time (a lease in the database). It wakes on submit, finish, cancel and
worker events published over Redis, and on a short timer, so a lost wake-up costs at most
one tick. Redis only ever holds work a device can start now: the database is the queue.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timedelta

import redis
from celery import Celery
from sqlalchemy import select

from service.accounting.rollups import fold_ended_jobs
from service.db import Database, is_connection_lost
from service.live import Publisher, wake_channel
from service.models import Allocation, Device, DeviceState, Job, JobStatus, utcnow
from service.queues import make_celery
from service.scheduling.starting import pending_and_room, place_pending, send_dispatched
from service.settings import Settings
from service.store.devices import declare_worker_lost, find_silent_workers
from service.store.jobs import release_lost_job, undispatch
from service.store.leases import DISPATCHER_LEASE, acquire_lease, release_lease
from service.store.metric_summaries import jobs_to_summarise, summarise_job

log = logging.getLogger("gpulab.dispatcher")
SLOW_PASS_S = 5.0  # a pass at least this slow (and half a worker timeout) was kept from the database


def _failed(what: str, exc: Exception) -> None:
    """Log a failed step that is tried again: one line while the database cannot be reached (a
    restart would otherwise fill the log with a traceback every tick), the traceback otherwise."""
    if is_connection_lost(exc):
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("%s: the database is unavailable (%s); retrying", what, first[:300])
    else:
        log.error(what, exc_info=exc)

# Chart summaries: how far back a starting dispatcher looks, how much later than its own clock
# a job's finished_at may be committed (another host's clock, a finish's commit after its
# timestamp), and how many jobs one pass takes on.
SUMMARY_LOOKBACK = timedelta(days=1)
SUMMARY_MARGIN = timedelta(minutes=5)
SUMMARY_BATCH = 100


class Dispatcher:
    def __init__(self, settings: Settings, db: Database | None = None, celery: Celery | None = None):
        self.settings = settings
        self.db = db or Database.from_settings(settings)
        self.holder = f"{settings.host}:{uuid.uuid4().hex[:12]}"
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.publisher = Publisher(settings.redis_url)
        self.publisher.attach(self.db.read, self.db.write)
        self.celery = celery or make_celery(settings)  # after attach: its exchanges carry the installation
        self._lease_until = 0.0  # monotonic time until which our lease surely holds
        self._next_reap = 0.0
        self._redis_run_id: str | None = None  # changes when Redis restarts
        self._client: redis.Redis | None = None
        # When this process last began to see the database after not seeing it: workers'
        # heartbeats written meanwhile were invisible to it, so none is judged silent before
        # it has watched for a whole worker timeout.
        self._seeing_since = time.monotonic()
        self._blind = False
        self._pass_started = time.monotonic()
        self._summarised_to: datetime = utcnow() - SUMMARY_LOOKBACK  # finished before: summarised

    # -- one pass -------------------------------------------------------------------------

    def run_once(self, *, force_reap: bool = False) -> int:
        """One pass if this process holds the lease: reap (on the timer), then place. Returns jobs sent."""
        now = self._pass_started = time.monotonic()
        # The lease is renewed once a third of it has passed, not on every wake-up: a pass
        # woken by a submit then costs one transaction, not three.
        if now >= self._lease_until - 2 * self.settings.lease_s / 3:
            with self.db.writing() as session:
                if not acquire_lease(session=session, name=DISPATCHER_LEASE, holder=self.holder,
                                     seconds=self.settings.lease_s):
                    self._lease_until = 0.0
                    return 0
            self._lease_until = now + self.settings.lease_s
        if force_reap or now >= self._next_reap:
            self.reap()
            self._next_reap = now + self.settings.dispatcher_tick_s
        return self.dispatch()

    def dispatch(self) -> int:
        """Place what can start now, commit, then send each job to its device's queue."""
        # Most wake-ups (a finish, a submit that started its own job) leave nothing pending, or
        # (a submit while every device is busy) nothing a device could take: a read says so
        # without taking the write lock that workers' claims wait on.
        with self.db.reading() as session:
            waiting, room = pending_and_room(session)
            if not (waiting and room):
                return 0
        with self.db.writing() as session:
            placed = place_pending(session=session, settings=self.settings)
            session.commit()
        sent = send_dispatched(self.celery, self.db.writing, placed)
        if sent:
            log.info("dispatched %d job(s)", sent)
        return sent

    def _slow(self, since: float) -> bool:
        """Whether a pass started at `since` has waited on the database long enough that the
        workers' heartbeats, which wait on it too, may look silent."""
        return time.monotonic() - since > max(self.settings.worker_timeout_s / 2, SLOW_PASS_S)

    def reap(self) -> None:
        """Workers gone silent lose their jobs; dispatched jobs never claimed go back."""
        self.resend_after_broker_restart()
        # The first pass since the database came back, or one that waited on it up to here (another
        # process holding SQLite's lock: the workers' heartbeats waited as well).
        if self._blind or self._slow(self._pass_started):
            self._blind, self._seeing_since = False, time.monotonic()
        # Just back from a database outage, this process did not see the heartbeats written
        # meanwhile (nor could workers write them): judge silence only after a full timeout.
        silent_ok = time.monotonic() - self._seeing_since >= self.settings.worker_timeout_s
        with self.db.reading() as session:
            # Plain values: the rows would be expired and detached once this session ends.
            silent = [(w.id, w.device_id) for w in
                      find_silent_workers(session=session, timeout_s=self.settings.worker_timeout_s)
                      ] if silent_ok else []
        for worker_id, device_id in silent:
            with self.db.writing() as session:
                lost = declare_worker_lost(session=session, worker_id=worker_id)
            log.warning("worker %s on %s missed its heartbeats: %d job(s) lost", worker_id, device_id, len(lost))
            for job_id, attempt in lost:
                with self.db.writing() as session:
                    release_lost_job(session=session, job_id=job_id, attempt=attempt,
                                     why=f"worker {worker_id} on {device_id} stopped answering")
        cutoff = utcnow() - timedelta(seconds=self.settings.dispatch_timeout_s)
        with self.db.reading() as session:
            # Through the allocations: a gang whose other device went offline goes back too.
            stale = session.execute(
                select(Job.id, Job.attempt, Device.id.label("device"), Device.state)
                .join(Allocation, Allocation.job_id == Job.id).join(Device, Device.id == Allocation.device_id)
                .where(Job.status == JobStatus.dispatched)
                .where((Job.dispatched_at < cutoff) | (Device.state == DeviceState.offline))
                .order_by(Job.id)
            ).all()
        for row in stale:
            why = (f"{row.device} went offline" if row.state == DeviceState.offline
                   else f"not claimed within {self.settings.dispatch_timeout_s:g} s")
            with self.db.writing() as session:
                undispatch(session=session, job_id=row.id, attempt=row.attempt, why=why)  # once per job: fenced
        try:  # final jobs' utilisation and counters, stored once for /usage and /metrics
            fold_ended_jobs(self.db)
        except Exception as exc:
            # An optimisation of reads: its failure must not fail the pass (and mark this process blind).
            _failed("folding final jobs failed; /usage and /metrics count them live meanwhile", exc)

    def summarise(self) -> int:
        """Store the chart summaries of jobs that became final since the last pass; returns how many.

        A job whose summary is not stored now (it moved on while read) is looked at again next pass.
        """
        started = utcnow()
        with self.db.reading() as session:
            todo = jobs_to_summarise(session=session, since=self._summarised_to - SUMMARY_MARGIN,
                                     limit=SUMMARY_BATCH)
        stored = 0
        for job_id, _ in todo:
            with self.db.reading() as read, self.db.writing() as write:
                stored += summarise_job(read=read, write=write, job_id=job_id)
        # All of them: nothing that finished before this pass is left; else on from the last.
        self._summarised_to = started if len(todo) < SUMMARY_BATCH else max(self._summarised_to, todo[-1][1])
        return stored

    def summarise_forever(self) -> None:
        """Summarise on the dispatcher's tick while this process holds the lease.

        A thread of its own: one job's 100,000 values took 0.3-1.7 s to aggregate on the loaded
        2-core machine, and in the placement loop the next pending job would wait that long.
        """
        while not self.stop.wait(self.settings.dispatcher_tick_s):
            if time.monotonic() >= self._lease_until:
                continue
            try:
                self.summarise()
            except Exception as exc:
                # Reads fall back to live aggregation: nothing else waits on this.
                _failed("chart summaries failed; job pages read their metrics live meanwhile", exc)

    def resend_after_broker_restart(self) -> int:
        """When Redis restarted, the messages of dispatched jobs may be gone: send them again.

        Redis restarted without its data (or from an older snapshot) has lost them; the job
        rows still say `dispatched`. They go back to pending and are dispatched again under a
        new attempt, so a message that did survive claims nothing.
        """
        try:
            run_id = str(self._redis().info("server")["run_id"])
        except redis.RedisError:
            return 0  # down: nothing can be sent now anyway
        previous, self._redis_run_id = self._redis_run_id, run_id
        if previous is None or previous == run_id:
            return 0
        with self.db.reading() as session:
            rows = session.execute(
                select(Job.id, Job.attempt).where(Job.status == JobStatus.dispatched)
            ).all()
        for row in rows:
            with self.db.writing() as session:
                undispatch(session=session, job_id=row.id, attempt=row.attempt,
                           why="Redis restarted: its message may be lost")
        log.warning("Redis restarted: %d dispatched job(s) sent again", len(rows))
        return len(rows)

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2,
                                                socket_timeout=2)
        return self._client

    # -- the loop -------------------------------------------------------------------------

    def listen(self) -> None:
        """Set the wake event on every message of the wake channel; reconnect forever."""
        while not self.stop.is_set():
            try:
                client = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=3)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(wake_channel())
                while not self.stop.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
                        self.wake.set()
            except redis.RedisError as exc:
                log.warning("wake channel unavailable (%s); running on the timer", exc)
                self.stop.wait(2.0)

    def run_forever(self) -> None:
        threading.Thread(target=self.listen, name="wake-listener", daemon=True).start()
        threading.Thread(target=self.summarise_forever, name="chart-summaries", daemon=True).start()
        log.info("dispatcher %s started", self.holder)
        while not self.stop.is_set():
            # Cleared before the pass: a wake-up that arrives during it starts the next one.
            self.wake.clear()
            started = time.monotonic()
            try:
                self.run_once()
            except Exception as exc:
                _failed("dispatcher pass failed", exc)
                self._blind = True
                self.stop.wait(1.0)
            else:
                self._blind = self._blind or self._slow(started)  # it waited after its reap
            self.wake.wait(timeout=self.settings.dispatcher_tick_s)
        with self.db.writing() as session:
            release_lease(session=session, name=DISPATCHER_LEASE, holder=self.holder)
