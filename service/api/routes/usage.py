"""/usage: device-hours allocated and used per member, device or kind; the queue over time."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from service.accounting.report import usage_report
from service.accounting.timeline import queue_timeline
from service.accounting.usage import idle_jobs, job_usage, parse_since, parse_span
from service.api.deps import CurrentUser, JobId, ReadSession, State
from service.api.routing import Route
from service.errors import JobNotFound
from service.models import utcnow
from service.schemas import JobUsagePublic, QueueTimeline, TimelinePointPublic, UsageReport, UsageRowPublic

router = APIRouter(prefix="/usage", tags=["usage"], route_class=Route)

Since = Annotated[str, Query(description="a span back from now (24h, 7d) or an ISO datetime")]


@router.get("", response_model=UsageReport, summary="Device-hours, outcomes and waits per member, device or kind")
def usage(
    user: CurrentUser,
    session: ReadSession,
    state: State,
    since: Since = "7d",
    group_by: Literal["member", "device", "kind"] = "member",
) -> UsageReport:
    now = utcnow()
    start = parse_since(since, now=now)
    rows = usage_report(session, since=start, group_by=group_by, now=now)
    settings = state.settings
    idle = idle_jobs(session, idle_minutes=settings.idle_minutes, idle_pct=settings.idle_utilization_pct, now=now)
    return UsageReport(
        since=start, until=now, group_by=group_by, idle_minutes=settings.idle_minutes,
        rows=[UsageRowPublic(**{k: v for k, v in asdict(r).items() if not k.startswith("_")}) for r in rows],
        idle_jobs=[JobUsagePublic(**asdict(u)) for u in idle],
    )


@router.get("/timeline", response_model=QueueTimeline, summary="Queue depth, running jobs and mean wait over time")
def timeline(
    user: CurrentUser,
    session: ReadSession,
    since: Since = "24h",
    step: Annotated[str | None, Query(description="bucket width (5m, 1h); default: about 60 points")] = None,
) -> QueueTimeline:
    now = utcnow()
    start = parse_since(since, now=now)
    step_s = parse_span(step, field_name="step") if step else (now - start).total_seconds() / 60
    step_s = max(step_s, 1.0, (now - start).total_seconds() / 2000)  # at most 2000 points
    points = queue_timeline(session, since=start, step_s=step_s, now=now)
    return QueueTimeline(since=start, until=now, step_s=step_s,
                         points=[TimelinePointPublic(**asdict(p)) for p in points])


@router.get("/jobs/{job_id}", response_model=JobUsagePublic, summary="One job's accounting and efficiency")
def one_job(job_id: JobId, user: CurrentUser, session: ReadSession, state: State) -> JobUsagePublic:
    settings = state.settings
    u = job_usage(session, job_id=job_id, idle_minutes=settings.idle_minutes, idle_pct=settings.idle_utilization_pct)
    if u is None:
        raise JobNotFound(f"no job has id {job_id}", field="job_id", value=job_id)
    return JobUsagePublic(**asdict(u))
