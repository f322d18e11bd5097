"""/jobs: submit, list, read, cancel, follow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi import Path as FastPath
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, select
from starlette.concurrency import run_in_threadpool

from jobs.artifacts import ArtifactRefused, open_artifact
from jobs.command import ENV_VALUE_MASK
from jobs.context import is_safe_artifact_name, job_dir
from service.api.deps import (
    MAX_ID,
    CurrentUser,
    JobId,
    ReadSession,
    State,
    WriteSession,
    bearer_token,
    in_db_thread,
    unauthorized,
    user_by_token_hash,
)
from service.api.problems import problem_responses
from service.api.routing import Route
from service.api.streams import follow_job, subscribe
from service.api.tickets import TICKET_TTL_S, issue_ticket, redeem_ticket
from service.batches import submit_batch
from service.errors import InvalidRequest, NotFound
from service.models import Job, JobEvent, JobStatus, User, utcnow
from service.scheduling.starting import send_dispatched
from service.schemas import (
    ArtifactPublic,
    CommandPublic,
    EventPage,
    EventPublic,
    JobBatchCreate,
    JobBatchPublic,
    JobCreate,
    JobPage,
    JobPublic,
    MetricPoint,
)
from service.security import hash_token
from service.store import events as event_store
from service.store import job_records
from service.store import jobs as job_store
from service.store.bundles import command_facts
from service.submission import submit

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=Route)



def job_public(job: Job, owner: str, viewer: User, progress: dict | None = None) -> JobPublic:
    """A job as the API shows it to `viewer`. Another member sees what the shared queue needs,
    not the job's contents: a command's --env names without their values (where a member puts an
    API key), no result, and of an error its first line only (a command's holds its last output)."""
    end = job.started_at or (None if job.status != JobStatus.pending else utcnow())
    wait = (end - job.created_at).total_seconds() if end else None
    data = {c: getattr(job, c) for c in JobPublic.model_fields if hasattr(job, c)}
    if not job_records.owns(viewer, job):
        if env := (data.get("params") or {}).get("env"):
            data["params"] = {**data["params"], "env": dict.fromkeys(env, ENV_VALUE_MASK)}
        data["result"] = None
        data["error"] = data["error"] and data["error"].splitlines()[0]
    return JobPublic(**data, owner=owner, wait_seconds=wait, progress=progress)


# Built once: a job's page and every answer naming owners send these, and building a statement
# (coercing its operands, then its cache key) cost more than running it.
_OWNER_NAMES = select(User.id, User.name).where(User.id.in_(bindparam("ids", expanding=True)))
_LAST_PROGRESS = (select(JobEvent.data)
                  .where(JobEvent.job_id == bindparam("job_id", type_=JobEvent.job_id.type),
                         JobEvent.type == "progress")
                  .order_by(JobEvent.seq.desc()).limit(1))


def _owner_names(session: ReadSession, jobs: list[Job]) -> dict[int, str]:
    ids = sorted({j.owner_id for j in jobs})
    return dict(session.connection().execute(_OWNER_NAMES, {"ids": ids}).all()) if ids else {}


def _last_progress(session: ReadSession, job_id: int) -> dict | None:
    return session.connection().execute(_LAST_PROGRESS, {"job_id": job_id}).scalar()


@router.post("", status_code=201, response_model=JobPublic, summary="Submit a job",
             responses={**problem_responses(403, 409, 429),
                        200: {"model": JobPublic,
                              "description": "a retry with the same Idempotency-Key: the first job"}})
def create_job(
    body: JobCreate,
    response: Response,
    user: CurrentUser,
    session: WriteSession,
    state: State,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobPublic:
    state.publisher.hold(session)
    try:
        job, created, placed = submit(session=session, settings=state.settings, user=user, body=body,
                                      idempotency_key=idempotency_key)
        # Committed: a job placed at once goes to its device's queue now, no dispatcher pass between.
        send_dispatched(state.celery, lambda: nullcontext(session), placed, retry=False)
    finally:
        state.publisher.release(session)  # what the commit queued for followers, after the send
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/jobs/{job.id}"
    return job_public(job, user.name, user)


@router.post("/batch", status_code=201, response_model=JobBatchPublic, summary="Submit a batch of jobs (a sweep)",
             description="All or none: each entry is checked as POST /jobs checks it, a refusal names the entry "
             "(`jobs[3].params.lr`) and records nothing. The jobs share a batch id: `GET /jobs?batch=N`.",
             responses={**problem_responses(403, 409, 429),
                        200: {"model": JobBatchPublic,
                              "description": "a retry with the same Idempotency-Key: the first batch"}})
def create_batch(
    body: JobBatchCreate,
    response: Response,
    user: CurrentUser,
    session: WriteSession,
    state: State,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobBatchPublic:
    limit = state.settings.batch_max
    if len(body.jobs) > limit:
        raise InvalidRequest(f"jobs: {len(body.jobs)} entries, and a batch holds at most {limit} (GPULAB_BATCH_MAX)",
                             field="jobs", value=len(body.jobs))
    state.publisher.hold(session)
    try:
        jobs, created, placed = submit_batch(session=session, settings=state.settings, user=user, bodies=body.jobs,
                                             idempotency_key=idempotency_key)
        send_dispatched(state.celery, lambda: nullcontext(session), placed, retry=False)
    finally:
        state.publisher.release(session)
    if not created:
        response.status_code = 200
    return JobBatchPublic(batch_id=jobs[0].id, jobs=[job_public(j, user.name, user) for j in jobs])


@router.get("", response_model=JobPage, summary="List jobs, newest first")
def list_jobs(
    user: CurrentUser,
    session: ReadSession,
    state: State,
    status: Annotated[list[JobStatus] | None, Query()] = None,
    owner: Annotated[str | None, Query(max_length=64)] = None,
    me: bool = False,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    batch: Annotated[int | None, Query(ge=1, le=MAX_ID, description="the jobs of one batch (POST /jobs/batch)")] = None,
    cursor: Annotated[int | None, Query(ge=1, le=MAX_ID, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPage:
    owner_id = None
    if me:
        owner_id = user.id
    elif owner:
        owner_id = session.scalar(select(User.id).where(User.name == owner))
        if owner_id is None:
            raise InvalidRequest(f"no member is called {owner!r}", field="owner", value=owner)
    jobs, next_cursor = job_records.list_jobs(session=session, statuses=status or (), owner_id=owner_id,
                                            kind=kind, batch_id=batch, before_id=cursor, limit=limit)
    names = _owner_names(session, jobs)
    return JobPage(items=[job_public(j, names.get(j.owner_id, "?"), user) for j in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic, summary="One job")
def get_job(job_id: JobId, user: CurrentUser, session: ReadSession, state: State) -> JobPublic:
    job = job_records.get_job(session=session, job_id=job_id)
    names = _owner_names(session, [job])
    public = job_public(job, names.get(job.owner_id, "?"), user, _last_progress(session, job_id))
    command = command_facts(session=session, job=job, params=public.params,
                            shared_account=state.settings.command_user)
    return public.model_copy(update={"command": command and CommandPublic.model_validate(command)})


@router.post("/{job_id}/cancel", response_model=JobPublic, summary="Cancel a job",
             responses=problem_responses(403, 409))
def cancel_job(job_id: JobId, user: CurrentUser, session: WriteSession) -> JobPublic:
    job = job_store.request_cancel(session=session, job_id=job_id, user=user)
    names = _owner_names(session, [job])
    return job_public(job, names.get(job.owner_id, "?"), user)


class StreamTicket(BaseModel):
    ticket: str = Field(description="pass as ?ticket= to the events URL within expires_in_s; works once")
    expires_in_s: int
    url: str = Field(description="the events URL with the ticket, for an EventSource")


@router.post("/{job_id}/events/tickets", status_code=201, response_model=StreamTicket,
             summary="A single-use ticket to follow a job's events from a browser",
             description="EventSource cannot send an Authorization header, and tokens never go in URLs "
             "(logs keep URLs): exchange the Bearer token for a ticket that opens one stream.",
             responses=problem_responses(401, 403, 404, 422, 503))
def stream_ticket(job_id: JobId, request: Request, user: CurrentUser, session: ReadSession,
                  state: State) -> StreamTicket:
    job_records.readable_job(session=session, job_id=job_id, user=user)
    ticket = issue_ticket(state.publisher.client, token_hash=request.state.token_hash, job_id=job_id)
    return StreamTicket(ticket=ticket, expires_in_s=TICKET_TTL_S,
                        url=f"/jobs/{job_id}/events?ticket={ticket}")


@router.get(
    "/{job_id}/events",
    response_model=EventPage,
    summary="A job's log, progress, metrics and status changes",
    description="JSON by default; Server-Sent Events with `Accept: text/event-stream` "
    "(resumable with `Last-Event-ID`, which is the event's `seq`). Authenticate with the Bearer "
    "header, or with `?ticket=` from `POST /jobs/{job_id}/events/tickets` (a browser's EventSource). "
    "A stream ends within seconds of its token being revoked.",
    responses={**problem_responses(401, 403, 404, 422, 503),
               200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                     "description": "the events, as JSON or as a stream"}},
)
async def job_events(
    job_id: JobId,
    request: Request,
    state: State,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="only events with seq above this")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    type: Annotated[list[str] | None, Query()] = None,
    ticket: Annotated[str | None, Query(max_length=100, description="a stream ticket (instead of a token)")] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
):
    if ticket:
        token_hash = await run_in_threadpool(redeem_ticket, state.publisher.client, ticket=ticket, job_id=job_id)
        if token_hash is None:
            raise unauthorized("the stream ticket is unknown, used or expired: ask for a new one")
    else:
        token_hash = hash_token(bearer_token(request))

    def read() -> tuple[Job, list[dict]]:
        with state.db.reading() as session:
            user = user_by_token_hash(session, token_hash)
            job = job_records.readable_job(session=session, job_id=job_id, user=user)
            items = event_store.list_events(session=session, job_id=job_id, after_seq=after,
                                            limit=limit, types=type or ())
            return job, items

    job, items = await in_db_thread(state, read)
    if "text/event-stream" in request.headers.get("accept", ""):
        start = after
        if last_event_id:
            try:
                start = max(start, min(int(last_event_id), MAX_ID))
            except ValueError:
                raise InvalidRequest("Last-Event-ID must be an event's seq", field="Last-Event-ID",
                                     value=last_event_id) from None
        subscription = await subscribe(state, job_id)
        return StreamingResponse(
            follow_job(state, request, job_id, start, subscription, token_hash=token_hash),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    last = items[-1]["seq"] if items else after
    return EventPage(job_id=job_id, status=job.status, items=[EventPublic(**e) for e in items], last_seq=last)


@router.get("/{job_id}/metrics", response_model=list[MetricPoint], summary="A job's metric values",
            responses=problem_responses(403))
def job_metrics(job_id: JobId, user: CurrentUser, session: ReadSession,
                name: Annotated[str | None, Query(max_length=128)] = None) -> list[MetricPoint]:
    job_records.readable_job(session=session, job_id=job_id, user=user)
    return [MetricPoint(name=m.name, step=m.step, value=m.value, attempt=m.attempt)
            for m in event_store.list_metrics(session=session, job_id=job_id, name=name)]


@router.get("/{job_id}/artifacts", response_model=list[ArtifactPublic], summary="A job's artifacts",
            responses=problem_responses(403))
def job_artifacts(job_id: JobId, user: CurrentUser, session: ReadSession) -> list[ArtifactPublic]:
    job_records.readable_job(session=session, job_id=job_id, user=user)
    return [ArtifactPublic(name=a.name, content_type=a.content_type, size_bytes=a.size_bytes,
                           created_at=a.created_at, url=f"/jobs/{job_id}/artifacts/{a.name}")
            for a in event_store.list_artifacts(session=session, job_id=job_id)]


@router.get("/{job_id}/artifacts/{name}", summary="Download one artifact", response_class=StreamingResponse,
            responses={**problem_responses(403),
                       200: {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "the file, with the content type it was recorded with "
                                            "(image/png for a plot, application/octet-stream for a checkpoint)"}})
def job_artifact(job_id: JobId, name: Annotated[str, FastPath(max_length=128)], user: CurrentUser,
                 session: ReadSession, state: State) -> StreamingResponse:
    if not is_safe_artifact_name(name):
        raise InvalidRequest(f"artifact name {name!r} is not a plain file name", field="name", value=name)
    job_records.readable_job(session=session, job_id=job_id, user=user)
    art = event_store.get_artifact(session=session, job_id=job_id, name=name)
    missing = NotFound(f"job {job_id} has no artifact {name!r}", field="name", value=name)
    if art is None:
        raise missing
    try:
        # Opened without following links: a link the job left never reaches a file outside.
        file, size = open_artifact(job_dir(state.settings.artifacts_root, job_id), name)
    except ArtifactRefused:
        raise missing from None
    return StreamingResponse(_chunks(file), media_type=art.content_type, headers={
        "Content-Length": str(size), "Content-Disposition": f'attachment; filename="{name}"'})


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    with file:
        while chunk := file.read(1 << 16):
            yield chunk
