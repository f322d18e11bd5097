"""Rollups for reads at scale: what a final job adds to /usage and to /metrics, computed once.

A final job never changes again (gpulab reopens and deletes no job), yet every /usage read
averaged its device's readings over its run again (a month of them: millions of rows), and
every scrape counted it again into /metrics' counters. The dispatcher's housekeeping folds
each final job once, shortly after it ended: it stores the count and sum of its leader
device's readings over the run on the job, and adds the job to `job_tallies`, in one
transaction. The fold's mark is `utilization_readings` itself: NULL means not folded, so a
reader adds the stored part to a live count of the unfolded jobs (pending, running, just
ended) and nothing is counted twice or missed, whatever the fold has reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, func, select
from sqlalchemy.orm import Session

from service.db import Database
from service.models import FINAL_STATUSES, DeviceSample, Job, JobTally, utcnow

DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600, 3600)
# A reading taken just before a job's end can commit just after it: fold once they are in.
FOLD_GRACE = timedelta(minutes=2)
# Jobs per housekeeping pass: a first pass over a long history is spread over many.
FOLD_BATCH = 500


@dataclass
class Totals:
    """Jobs of one (kind, status, reason): the counters and both histograms' buckets."""

    kind: str
    status: str
    reason: str
    jobs: int = 0
    started: int = 0
    run_seconds: float = 0.0
    timed: int = 0
    duration_buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    latency_seconds: float = 0.0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))

    def add(self, other: Any) -> None:
        self.jobs += int(other.jobs)
        self.started += int(other.started)
        self.run_seconds += float(other.run_seconds or 0.0)
        self.timed += int(other.timed)
        self.duration_buckets = [a + int(b) for a, b in zip(self.duration_buckets, other.duration_buckets, strict=True)]
        self.latency_seconds += float(other.latency_seconds or 0.0)
        self.latency_buckets = [a + int(b) for a, b in zip(self.latency_buckets, other.latency_buckets, strict=True)]


def seconds_between(session: Session, start: Any, end: Any) -> Any:
    """end − start in seconds, as SQL for this database."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


def _bucket_counts(value: Any, buckets: tuple[float, ...]) -> list[Any]:
    return [func.coalesce(func.sum(case((value <= b, 1), else_=0)), 0) for b in buckets]


def count_jobs(session: Session, where: Any) -> list[Totals]:
    """The jobs matching `where`, counted per (kind, status, reason) in one pass."""
    jobs = (select(Job.id, Job.kind, Job.status, Job.reason, Job.started_at, Job.run_seconds,
                   seconds_between(session, Job.created_at, Job.started_at).label("latency"))
            .where(where).cte("j"))
    if session.get_bind().dialect.name == "sqlite":
        # Each job's latency computed once: inlined, SQLite calls julianday() twice for each of
        # the twelve sums that read it (2.5× slower at 20,000 jobs).
        jobs = jobs.prefix_with("MATERIALIZED")
    nd = len(DURATION_BUCKETS)
    out = []
    for r in session.execute(
        select(jobs.c.kind, jobs.c.status, jobs.c.reason, func.count(jobs.c.id), func.count(jobs.c.started_at),
               func.coalesce(func.sum(jobs.c.run_seconds), 0.0), func.count(jobs.c.run_seconds),
               *_bucket_counts(jobs.c.run_seconds, DURATION_BUCKETS),
               func.coalesce(func.sum(jobs.c.latency), 0.0), *_bucket_counts(jobs.c.latency, LATENCY_BUCKETS))
        .group_by(jobs.c.kind, jobs.c.status, jobs.c.reason)
    ):
        out.append(Totals(kind=r[0], status=r[1], reason=r[2] or "", jobs=r[3], started=r[4],
                          run_seconds=float(r[5]), timed=r[6], duration_buckets=[int(c) for c in r[7:7 + nd]],
                          latency_seconds=float(r[7 + nd]), latency_buckets=[int(c) for c in r[8 + nd:]]))
    return out


def job_totals(*, session: Session) -> list[Totals]:
    """Every job, per (kind, status, reason): the folded tallies plus the unfolded jobs counted now.

    On PostgreSQL the caller reads in one snapshot (REPEATABLE READ): a fold committed between
    the two statements would otherwise count its jobs twice or not at all, and a Prometheus
    counter that dips reads as a reset.
    """
    merged: dict[tuple[str, str, str], Totals] = {}
    for part in (list(session.scalars(select(JobTally))), count_jobs(session, Job.utilization_readings.is_(None))):
        for t in part:
            key = (t.kind, t.status, t.reason)
            merged.setdefault(key, Totals(*key)).add(t)
    return [merged[k] for k in sorted(merged)]


def _due(now: datetime) -> Any:
    return and_(Job.utilization_readings.is_(None), Job.status.in_(list(FINAL_STATUSES)),
                Job.finished_at < now - FOLD_GRACE)


def fold_ended_jobs(db: Database) -> int:
    """The dispatcher's housekeeping: fold a batch if any job is due; returns jobs folded."""
    now = utcnow()
    # Looked for in a read first: on SQLite a write transaction holds the lock workers' claims wait on.
    with db.reading() as session:
        if session.scalar(select(Job.id).where(_due(now)).limit(1)) is None:
            return 0
    with db.writing() as session:
        return fold_final_jobs(session=session, now=now)


def fold_final_jobs(*, session: Session, now: datetime | None = None, limit: int = FOLD_BATCH) -> int:
    """Store final jobs' utilisation readings and add them to the tallies, oldest first; returns jobs folded."""
    now = now or utcnow()
    ids = list(session.scalars(
        select(Job.id).where(_due(now))
        # Another dispatcher (a lease just lost) folding at once skips these rather than
        # adding them twice; SQLite's write transactions are one at a time anyway.
        .order_by(Job.id).limit(limit).with_for_update(skip_locked=True)))
    if not ids:
        return 0
    end = func.coalesce(Job.finished_at, Job.started_at)
    readings = session.execute(
        # The readings `usage._mean_utilization` averages over a whole run, summed instead.
        select(Job.id, func.count(DeviceSample.utilization_pct), func.sum(DeviceSample.utilization_pct))
        .outerjoin(DeviceSample, and_(DeviceSample.device_id == Job.device_id, DeviceSample.t >= Job.started_at,
                                      DeviceSample.t <= end, DeviceSample.utilization_pct.is_not(None)))
        .where(Job.id.in_(ids)).group_by(Job.id)).all()
    tallies = {(t.kind, t.status, t.reason): t for t in session.scalars(select(JobTally).with_for_update())}
    for t in count_jobs(session, Job.id.in_(ids)):
        row = tallies.get((t.kind, t.status, t.reason))
        if row is None:
            session.add(JobTally(kind=t.kind, status=t.status, reason=t.reason, jobs=t.jobs, started=t.started,
                                 run_seconds=t.run_seconds, timed=t.timed, duration_buckets=t.duration_buckets,
                                 latency_seconds=t.latency_seconds, latency_buckets=t.latency_buckets))
            continue
        total = Totals(t.kind, t.status, t.reason)
        total.add(row)
        total.add(t)
        for name in ("jobs", "started", "run_seconds", "timed", "duration_buckets", "latency_seconds",
                     "latency_buckets"):
            setattr(row, name, getattr(total, name))
    session.connection().execute(
        cast(Table, Job.__table__).update().where(Job.id == bindparam("job"), Job.utilization_readings.is_(None)),
        [{"job": r[0], "utilization_readings": r[1], "utilization_sum": float(r[2] or 0.0)} for r in readings])
    session.commit()
    return len(ids)
