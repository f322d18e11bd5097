"""A job page's reads: the log paginated from the end, and metric series sized for charts."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import MAX_ID, CurrentUser, JobId, ReadSession
from service.api.problems import problem_responses
from service.api.routing import Route
from service.schemas import EventPublic, LogPage, MetricSeriesPublic
from service.store import job_records
from service.store.job_views import log_tail
from service.store.metric_summaries import CHART_POINTS, chart_series

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=Route)


@router.get("/{job_id}/log", response_model=LogPage, summary="A job's log and status lines, newest page first",
            responses=problem_responses(403))
def job_log(
    job_id: JobId,
    user: CurrentUser,
    session: ReadSession,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="the `before` of the newer page")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> LogPage:
    job = job_records.readable_job(session=session, job_id=job_id, user=user)
    items, cursor = log_tail(session=session, job_id=job_id, before_seq=before, limit=limit)
    return LogPage(job_id=job_id, status=job.status, items=[EventPublic(**e) for e in items], before=cursor,
                   last_seq=job.event_seq)


@router.get(
    "/{job_id}/metrics/series",
    response_model=list[MetricSeriesPublic],
    summary="A job's metrics by name, downsampled for charts",
    description="Each metric with more than `points` values comes back as `points` buckets (mean, min, max); "
    "`full=true` returns every value. A finished job's default chart is read from its stored summary.",
    responses=problem_responses(403),
)
def job_metric_series(
    job_id: JobId,
    user: CurrentUser,
    session: ReadSession,
    name: Annotated[list[str] | None, Query(max_length=128, description="only these metrics")] = None,
    points: Annotated[int, Query(ge=10, le=10_000)] = CHART_POINTS,
    full: bool = False,
) -> list[MetricSeriesPublic]:
    job = job_records.readable_job(session=session, job_id=job_id, user=user)
    series = chart_series(session=session, job=job, points=points, names=name, full=full)
    return [MetricSeriesPublic(**asdict(s)) for s in series]
