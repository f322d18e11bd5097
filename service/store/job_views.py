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

from sqlalchemy import Integer, cast, func, literal, select, text, union_all
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
    """Each metric of a job (or those in `names`) by step; past `points` steps, downsampled in SQL.

    A bucket's step is the first step in it and its value the mean, so a loss curve keeps its
    shape; min and max keep the spikes that a mean would hide. `full` returns every value.
    """
    out = []
    for name in names or metric_names(session=session, job_id=job_id):
        lo, hi, has_null = session.execute(select(
            select(func.min(JobMetric.step)).where(JobMetric.job_id == job_id, JobMetric.name == name)
            .scalar_subquery(),
            select(func.max(JobMetric.step)).where(JobMetric.job_id == job_id, JobMetric.name == name)
            .scalar_subquery(),
            select(JobMetric.id).where(JobMetric.job_id == job_id, JobMetric.name == name,
                                       JobMetric.step.is_(None)).limit(1).scalar_subquery(),
        )).one()
        # Values without a step (one-off measurements) have no axis to bucket along: sent whole.
        if full or lo is None or has_null is not None or hi - lo < points:
            series = _every_value(session, job_id, name)
        else:
            series = _buckets(session, job_id, name, lo, hi, points)
        if series.count:
            out.append(series)
    return out


def metric_names(*, session: Session, job_id: int) -> list[str]:
    """A job's metric names, sorted, by hopping along the index from one name to the next.

    A plain DISTINCT reads every value's index entry on PostgreSQL (it has no skip scan):
    100,000 entries for three names.
    """
    rows = session.execute(text(
        "WITH RECURSIVE n(name) AS ("
        " SELECT min(name) FROM job_metrics WHERE job_id = :j"
        " UNION ALL"
        " SELECT (SELECT min(m.name) FROM job_metrics m WHERE m.job_id = :j AND m.name > n.name)"
        " FROM n WHERE n.name IS NOT NULL)"
        " SELECT name FROM n WHERE name IS NOT NULL"), {"j": job_id})
    return [r.name for r in rows]


def _every_value(session: Session, job_id: int, name: str) -> MetricSeries:
    rows = session.execute(
        select(JobMetric.step, JobMetric.value)
        .where(JobMetric.job_id == job_id, JobMetric.name == name)
        .order_by(JobMetric.step, JobMetric.id)
    ).all()
    return MetricSeries(name=name, count=len(rows), downsampled=False,
                        step=[r.step for r in rows], value=[r.value for r in rows])


def _buckets(session: Session, job_id: int, name: str, lo: int, hi: int, points: int) -> MetricSeries:
    # Integer arithmetic on both databases: bucket = (step - lo) * points // (span + 1).
    span = hi - lo + 1
    bucket = cast((JobMetric.step - literal(lo)) * literal(points), Integer) // literal(span)
    # No ORDER BY: sorting 500 buckets here is cheaper than the database sorting its groups.
    rows = sorted(session.execute(
        select(func.min(JobMetric.step).label("step"), func.avg(JobMetric.value).label("mean"),
               func.min(JobMetric.value).label("lo"), func.max(JobMetric.value).label("hi"),
               func.count().label("n"))
        .where(JobMetric.job_id == job_id, JobMetric.name == name)
        .group_by(bucket)
    ).all(), key=lambda r: r.step)
    if all(r.n == 1 for r in rows):  # sparse steps: every bucket holds one value, nothing was reduced
        return MetricSeries(name=name, count=len(rows), downsampled=False, step=[r.step for r in rows],
                            value=[float(r.mean) for r in rows])
    return MetricSeries(name=name, count=sum(r.n for r in rows), downsampled=True, step=[r.step for r in rows],
                        value=[float(r.mean) for r in rows], min=[float(r.lo) for r in rows],
                        max=[float(r.hi) for r in rows])
