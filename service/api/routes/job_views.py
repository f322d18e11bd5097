"""A job page's reads: the log paginated from the end, and metric series sized for charts."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import MAX_ID, CurrentUser, JobId, ReadSession, State
from service.models import JobStatus
from service.schemas import EventPublic, LogPage, MetricSeriesPublic
from service.store import jobs as job_store
from service.store.job_views import log_tail, metric_series

router = APIRouter(prefix="/jobs", tags=["jobs"])


class FinishedSeries:
    """The chart series of finished jobs, kept in memory: a finished job's metrics never change.

    Downsampling 100,000 values costs tens of milliseconds of aggregation in the database; a
    job page is opened again and again (compare, reload, a lab meeting), so the second load
    of a finished job reads this instead. Running jobs are always read afresh.
    """

    def __init__(self, size: int = 256):
        self.size = size
        self.items: OrderedDict[tuple, list[MetricSeriesPublic]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> list[MetricSeriesPublic] | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            return None

    def put(self, key: tuple, value: list[MetricSeriesPublic]) -> None:
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)


finished_series = FinishedSeries()


@router.get("/{job_id}/log", response_model=LogPage, summary="A job's log and status lines, newest page first")
def job_log(
    job_id: JobId,
    user: CurrentUser,
    session: ReadSession,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="the `before` of the newer page")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> LogPage:
    job = job_store.get_job(session=session, job_id=job_id)
    items, cursor = log_tail(session=session, job_id=job_id, before_seq=before, limit=limit)
    return LogPage(job_id=job_id, status=job.status, items=[EventPublic(**e) for e in items], before=cursor,
                   last_seq=job.event_seq)


@router.get(
    "/{job_id}/metrics/series",
    response_model=list[MetricSeriesPublic],
    summary="A job's metrics by name, downsampled for charts",
    description="Each metric with more than `points` values comes back as `points` buckets (mean, min, max); "
    "`full=true` returns every value.",
)
def job_metric_series(
    job_id: JobId,
    user: CurrentUser,
    session: ReadSession,
    state: State,
    name: Annotated[list[str] | None, Query(max_length=128, description="only these metrics")] = None,
    points: Annotated[int, Query(ge=10, le=10_000)] = 500,
    full: bool = False,
) -> list[MetricSeriesPublic]:
    job = job_store.get_job(session=session, job_id=job_id)
    final = JobStatus(job.status).is_final and not full
    key = (state.settings.database_url, job_id, job.attempt, points, tuple(name or ()))
    if final and (cached := finished_series.get(key)) is not None:
        return cached
    series = metric_series(session=session, job_id=job_id, points=points, names=name, full=full)
    out = [MetricSeriesPublic(**asdict(s)) for s in series]
    if final:
        finished_series.put(key, out)
    return out
