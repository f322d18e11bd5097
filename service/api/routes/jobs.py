"""/jobs: submit, list, read, cancel, follow."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import select

from jobs.context import is_safe_artifact_name, job_dir
from service.api.deps import CurrentUser, ReadSession, State, WriteSession
from service.api.problems import problem_responses
from service.api.streams import follow_job, subscribe
from service.errors import InvalidRequest, NotFound
from service.models import Job, JobEvent, JobStatus, User, utcnow
from service.schemas import (
    ArtifactPublic,
    EventPage,
    EventPublic,
    JobCreate,
    JobPage,
    JobPublic,
    MetricPoint,
)
from service.store import events as event_store
from service.store import jobs as job_store
from service.submission import submit

router = APIRouter(prefix="/jobs", tags=["jobs"])


def job_public(job: Job, owner: str, progress: dict | None = None) -> JobPublic:
    """A job as the API shows it."""
    end = job.started_at or (None if job.status != JobStatus.pending else utcnow())
    wait = (end - job.created_at).total_seconds() if end else None
    data = {c: getattr(job, c) for c in JobPublic.model_fields if hasattr(job, c)}
    return JobPublic(**data, owner=owner, wait_seconds=wait, progress=progress)


def _owner_names(session: ReadSession, jobs: list[Job]) -> dict[int, str]:
    ids = {j.owner_id for j in jobs}
    return dict(session.execute(select(User.id, User.name).where(User.id.in_(ids))).all()) if ids else {}


def _last_progress(session: ReadSession, job_id: int) -> dict | None:
    row = session.scalar(
        select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "progress")
        .order_by(JobEvent.seq.desc()).limit(1)
    )
    return row


@router.post("", status_code=201, response_model=JobPublic, summary="Submit a job",
             responses=problem_responses(403, 409, 429))
def create_job(
    body: JobCreate,
    response: Response,
    user: CurrentUser,
    session: WriteSession,
    state: State,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobPublic:
    job, created = submit(session=session, settings=state.settings, user=user, body=body,
                          idempotency_key=idempotency_key)
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/jobs/{job.id}"
    return job_public(job, user.name)


@router.get("", response_model=JobPage, summary="List jobs, newest first")
def list_jobs(
    user: CurrentUser,
    session: ReadSession,
    state: State,
    status: Annotated[list[JobStatus] | None, Query()] = None,
    owner: str | None = None,
    me: bool = False,
    kind: str | None = None,
    cursor: Annotated[int | None, Query(ge=1, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPage:
    owner_id = None
    if me:
        owner_id = user.id
    elif owner:
        owner_id = session.scalar(select(User.id).where(User.name == owner))
        if owner_id is None:
            raise InvalidRequest(f"no member is called {owner!r}", field="owner", value=owner)
    jobs, next_cursor = job_store.list_jobs(session=session, statuses=status or (), owner_id=owner_id,
                                            kind=kind, before_id=cursor, limit=limit)
    names = _owner_names(session, jobs)
    return JobPage(items=[job_public(j, names.get(j.owner_id, "?")) for j in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic, summary="One job")
def get_job(job_id: int, user: CurrentUser, session: ReadSession) -> JobPublic:
    job = job_store.get_job(session=session, job_id=job_id)
    names = _owner_names(session, [job])
    return job_public(job, names.get(job.owner_id, "?"), _last_progress(session, job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic, summary="Cancel a job",
             responses=problem_responses(403, 409))
def cancel_job(job_id: int, user: CurrentUser, session: WriteSession) -> JobPublic:
    job = job_store.request_cancel(session=session, job_id=job_id, user=user)
    names = _owner_names(session, [job])
    return job_public(job, names.get(job.owner_id, "?"))


@router.get(
    "/{job_id}/events",
    response_model=EventPage,
    summary="A job's log, progress, metrics and status changes",
    description="JSON by default; Server-Sent Events with `Accept: text/event-stream` "
    "(resumable with `Last-Event-ID`, which is the event's `seq`).",
)
async def job_events(
    job_id: int,
    request: Request,
    user: CurrentUser,
    state: State,
    after: Annotated[int, Query(ge=0, description="only events with seq above this")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    type: Annotated[list[str] | None, Query()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
):
    from starlette.concurrency import run_in_threadpool

    def read() -> tuple[Job, list[dict]]:
        with state.db.reading() as session:
            job = job_store.get_job(session=session, job_id=job_id)
            items = event_store.list_events(session=session, job_id=job_id, after_seq=after,
                                            limit=limit, types=type or ())
            return job, items

    job, items = await run_in_threadpool(read)
    if "text/event-stream" in request.headers.get("accept", ""):
        start = after
        if last_event_id:
            try:
                start = max(start, int(last_event_id))
            except ValueError:
                raise InvalidRequest("Last-Event-ID must be an event's seq", field="Last-Event-ID",
                                     value=last_event_id) from None
        subscription = await subscribe(state, job_id)
        return StreamingResponse(
            follow_job(state, request, job_id, start, subscription),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    last = items[-1]["seq"] if items else after
    return EventPage(job_id=job_id, status=job.status, items=[EventPublic(**e) for e in items], last_seq=last)


@router.get("/{job_id}/metrics", response_model=list[MetricPoint], summary="A job's metric values")
def job_metrics(job_id: int, user: CurrentUser, session: ReadSession, name: str | None = None) -> list[MetricPoint]:
    job_store.get_job(session=session, job_id=job_id)
    return [MetricPoint(name=m.name, step=m.step, value=m.value, attempt=m.attempt)
            for m in event_store.list_metrics(session=session, job_id=job_id, name=name)]


@router.get("/{job_id}/artifacts", response_model=list[ArtifactPublic], summary="A job's artifacts")
def job_artifacts(job_id: int, user: CurrentUser, session: ReadSession) -> list[ArtifactPublic]:
    job_store.get_job(session=session, job_id=job_id)
    return [ArtifactPublic(name=a.name, content_type=a.content_type, size_bytes=a.size_bytes,
                           created_at=a.created_at, url=f"/jobs/{job_id}/artifacts/{a.name}")
            for a in event_store.list_artifacts(session=session, job_id=job_id)]


@router.get("/{job_id}/artifacts/{name}", summary="Download one artifact", response_class=FileResponse)
def job_artifact(job_id: int, name: str, user: CurrentUser, session: ReadSession, state: State) -> FileResponse:
    if not is_safe_artifact_name(name):
        raise InvalidRequest(f"artifact name {name!r} is not a plain file name", field="name", value=name)
    art = event_store.get_artifact(session=session, job_id=job_id, name=name)
    path = job_dir(state.settings.artifacts_root, job_id) / name
    if art is None or not path.is_file():
        raise NotFound(f"job {job_id} has no artifact {name!r}", field="name", value=name)
    return FileResponse(path, media_type=art.content_type, filename=name)


