"""Reads behind a job's page: its log from the end, and its metrics as series sized for a chart.

A finished job's page used to replay every event through the live stream (1,566 events for one
regression run, 1,530 of them metric values). These reads touch only what the page shows:
the log's last lines through the (job_id, type, seq) index, and each metric reduced in SQL to
at most `points` buckets (mean, min and max of each) through the (job_id, name, step, value)
index, so a job with 100,000 metric values costs a few index range scans, not 100,000 rows
shipped to Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, cast, func, literal, select, union_all
from sqlalchemy.orm import Session

from service.models import JobEvent, JobMetric
from service.store.events import event_public

LOG_TYPES = ("log", "status")


def log_tail(*, session: Session, job_id: int, before_seq: int | None = None, limit: int = 200
             ) -> tuple[list[dict[str, Any]], int | None]:
    """The `limit` log and status lines before `before_seq` (the newest when None), oldest first.

    Returns (lines, cursor): pass the cursor as `before_seq` for the page before; None when
    there is nothing older.
    """
    # One index range per type, newest first, merged: with `type IN (...)` SQLite walks the
    # (job_id, seq) key instead, through every metric event of the job.
    parts = []
    for kind in LOG_TYPES:
        part = select(JobEvent.id, JobEvent.seq).where(JobEvent.job_id == job_id, JobEvent.type == kind)
        if before_seq is not None:
            part = part.where(JobEvent.seq < before_seq)
        parts.append(part.order_by(JobEvent.seq.desc()).limit(limit + 1).subquery().select())
    newest = union_all(*parts).subquery()
    ids = select(newest.c.id).order_by(newest.c.seq.desc()).limit(limit + 1)
    rows = list(session.scalars(select(JobEvent).where(JobEvent.id.in_(ids)).order_by(JobEvent.seq.desc())))
    more = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()
    return [event_public(r) for r in rows], (rows[0].seq if more and rows else None)


@dataclass
class MetricSeries:
    """One metric's values: every one, or one bucket per point (mean, with min and max)."""

    name: str
    count: int
    downsampled: bool
    step: list[int | None] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    min: list[float] | None = None
    max: list[float] | None = None


def metric_series(*, session: Session, job_id: int, points: int = 500, names: list[str] | None = None,
                  full: bool = False) -> list[MetricSeries]:
    """Each metric of a job (or those in `names`) by step; past `points` values, downsampled in SQL.

    A bucket's step is the first step in it and its value the mean, so a loss curve keeps its
    shape; min and max keep the spikes that a mean would hide. `full` returns every value.
    """
    where = [JobMetric.job_id == job_id]
    if names:
        where.append(JobMetric.name.in_(names))
    extents = session.execute(
        select(JobMetric.name, func.count().label("n"), func.min(JobMetric.step).label("lo"),
               func.max(JobMetric.step).label("hi"), func.count(JobMetric.step).label("with_step"))
        .where(*where).group_by(JobMetric.name).order_by(JobMetric.name)
    ).all()
    out = []
    for e in extents:
        # Values without a step (one-off measurements) have no axis to bucket along: sent whole.
        if full or e.n <= points or e.with_step < e.n or e.hi is None or e.hi == e.lo:
            out.append(_every_value(session, job_id, e.name, e.n))
        else:
            out.append(_buckets(session, job_id, e.name, e.n, e.lo, e.hi, points))
    return out


def _every_value(session: Session, job_id: int, name: str, count: int) -> MetricSeries:
    rows = session.execute(
        select(JobMetric.step, JobMetric.value)
        .where(JobMetric.job_id == job_id, JobMetric.name == name)
        .order_by(JobMetric.step, JobMetric.id)
    ).all()
    return MetricSeries(name=name, count=count, downsampled=False,
                        step=[r.step for r in rows], value=[r.value for r in rows])


def _buckets(session: Session, job_id: int, name: str, count: int, lo: int, hi: int, points: int
             ) -> MetricSeries:
    # Integer arithmetic on both databases: bucket = (step - lo) * points / (span + 1).
    span = hi - lo + 1
    bucket = cast((JobMetric.step - literal(lo)) * literal(points), Integer) // literal(span)
    rows = session.execute(
        select(func.min(JobMetric.step).label("step"), func.avg(JobMetric.value).label("mean"),
               func.min(JobMetric.value).label("lo"), func.max(JobMetric.value).label("hi"))
        .where(JobMetric.job_id == job_id, JobMetric.name == name)
        .group_by(bucket).order_by(func.min(JobMetric.step))
    ).all()
    return MetricSeries(name=name, count=count, downsampled=True, step=[r.step for r in rows],
                        value=[float(r.mean) for r in rows], min=[float(r.lo) for r in rows],
                        max=[float(r.hi) for r in rows])
