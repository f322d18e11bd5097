"""Chart summaries: a final job's metric series, downsampled once and stored.

The first load of a finished job's page downsampled its metrics in SQL: 100,000 values
aggregated on every load, for an answer that never changes once the job is final. The
dispatcher's housekeeping now writes that answer once (`summarise_job`), after the job's
final commit and off the worker's path between jobs; the page reads one row. Until the row
is written, or when the job moved on since (a new attempt, a late event), it aggregates live.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.models import Job, JobMetricSummary, JobStatus
from service.store.job_views import MetricSeries, metric_series

CHART_POINTS = 500  # the series endpoint's default: what the dashboard asks for


def chart_series(*, session: Session, job: Job, points: int = CHART_POINTS, names: list[str] | None = None,
                 full: bool = False) -> list[MetricSeries]:
    """A job's metric series for a chart: its stored summary when it has a valid one, else read live."""
    if not full and points == CHART_POINTS and JobStatus(job.status).is_final:
        row = session.get(JobMetricSummary, job.id)
        if row is not None and (row.attempt, row.event_seq, row.points) == (job.attempt, job.event_seq, points):
            stored = {s["name"]: MetricSeries(**s) for s in row.series}
            # As the live read answers: the names asked for, in that order, those with values.
            return list(stored.values()) if names is None else [stored[n] for n in names if n in stored]
    return metric_series(session=session, job_id=job.id, points=points, names=names, full=full)


def jobs_to_summarise(*, session: Session, since: datetime, limit: int = 100) -> list[tuple[int, datetime]]:
    """Final jobs finished since `since` that may need a summary and have no valid one, oldest first.

    Only a job with more events than the chart has points can have a metric to downsample
    (every metric value is an event): the rest are never looked at.
    """
    s = JobMetricSummary
    rows = session.execute(
        select(Job.id, Job.finished_at)
        .outerjoin(s, s.job_id == Job.id)
        # Not by status: SQLite would take (status, id) and read every final job. A job with a
        # finish time is final; summarise_job checks.
        .where(Job.finished_at >= since, Job.event_seq > CHART_POINTS)
        .where(or_(s.job_id.is_(None), s.attempt != Job.attempt, s.event_seq != Job.event_seq))
        .order_by(Job.finished_at, Job.id).limit(limit)
    ).all()
    return [(r.id, r.finished_at) for r in rows]


def summarise_job(*, read: Session, write: Session, job_id: int) -> bool:
    """Downsample a final job's metrics (in `read`) and store them (in `write`); False when not stored.

    Not stored: the job is not final, or it moved on while its values were read (its attempt
    or event count changed). A job with no metric to downsample is stored too (a row of its few
    values), so that housekeeping does not look at it again. Another
    writer's row for the same state wins, so two dispatchers (or a retry after a crash) write
    it once.
    """
    job = read.execute(select(Job.status, Job.attempt, Job.event_seq).where(Job.id == job_id)).one_or_none()
    if job is None or not JobStatus(job.status).is_final:
        return False
    # The event count is read before the values: an event appended meanwhile changes it, and
    # the write below refuses.
    series = metric_series(session=read, job_id=job_id, points=CHART_POINTS)
    read.rollback()  # the aggregate's snapshot is not held (SQLite's WAL would keep growing)
    still = write.execute(select(Job.id).where(
        Job.id == job_id, Job.status == job.status, Job.attempt == job.attempt, Job.event_seq == job.event_seq,
    )).one_or_none()
    if still is None:
        write.rollback()
        return False
    write.execute(delete(JobMetricSummary).where(JobMetricSummary.job_id == job_id))
    write.add(JobMetricSummary(job_id=job_id, attempt=job.attempt, event_seq=job.event_seq, points=CHART_POINTS,
                               series=[asdict(s) for s in series]))
    try:
        write.commit()
    except IntegrityError:  # another dispatcher stored it first
        write.rollback()
        return False
    return True
