"""A job's record: submitted jobs inserted (one or a batch), and read back by id, page or owner.

Moves between states are `store.jobs`' transitions; this module only adds pending jobs and
reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from sqlalchemy import JSON, Column, Table, bindparam, func, insert, inspect, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapper, Session, make_transient_to_detached

from service.db import flush_pending
from service.errors import Forbidden, IdempotencyConflict, JobNotFound
from service.live import job_channel, queue_publish, queue_wake
from service.models import Job, JobEvent, JobStatus, User, utcnow
from service.store.events import append_first_events, event_public, status_event, storable, storable_json

_JOBS = cast(Table, Job.__table__)
_EVENTS = cast(Table, JobEvent.__table__)


def insert_job(*, session: Session, job: Job, start: Callable[[Session, list[Job]], bool] | None = None,
               key_looked_up: bool = False) -> tuple[Job, bool]:
    """Record a validated job as pending; with an idempotency key, a retry returns the first.

    `start`, called before the commit, may dispatch the new job in this same transaction
    (returning True); otherwise the dispatcher is woken to place it. `key_looked_up`: the
    caller found no job under the key, holding the member's lock (a submit), so no second look.
    """
    if job.idempotency_key and not key_looked_up:
        existing = _by_idempotency_key(session, job.owner_id, job.idempotency_key)
        if existing is not None:
            return _same_request(existing, job), False
    try:
        _insert_one(session, job)
    except IntegrityError:
        # Two retries raced on the same key: the other insert won.
        session.rollback()
        existing = _by_idempotency_key(session, job.owner_id, job.idempotency_key)
        if existing is None:
            raise
        return _same_request(existing, job), False
    _start_and_commit(session, [job], start)
    return job, True


def insert_jobs(*, session: Session, jobs: Sequence[Job],
                start: Callable[[Session, list[Job]], bool] | None = None) -> list[Job]:
    """Record validated jobs as pending in one transaction, one batch: their batch id is the
    first job's id. `start` as for `insert_job`, once for all of them."""
    first, *rest = jobs
    _record_pending(session, [first])
    first.batch_id = first.id  # flushed with the rest: one UPDATE, no list of ids
    for job in rest:
        job.batch_id = first.id
    _record_pending(session, rest)
    _start_and_commit(session, list(jobs), start)
    return list(jobs)


def _record_pending(session: Session, jobs: Sequence[Job]) -> None:
    """INSERT the jobs and their first event; the ORM sends one INSERT for many rows."""
    if not jobs:
        return
    for job in jobs:
        # The job's first event is numbered 1 in its INSERT: no UPDATE to take the number.
        job.event_seq = 1
    if len(jobs) > 1 and session.get_bind().dialect.name == "sqlite":
        # SQLite does not promise a multi-row INSERT's RETURNING order, so the ORM would send one
        # INSERT per job to learn the ids. Its write transaction holds the database's only write
        # lock: the ids are the ones SQLite would give (the table has no AUTOINCREMENT: max + 1).
        last = session.scalar(select(func.max(Job.id))) or 0
        for i, job in enumerate(jobs, start=1):
            job.id = last + i
    session.add_all(jobs)
    session.flush()
    append_first_events(session, job_ids=[j.id for j in jobs],
                        event=status_event(JobStatus.pending, message="submitted"))


# A job's columns as the ORM maps them, with their Python-side defaults: (attribute, column, default).
_COLUMNS = [(attr.key, attr.columns[0].key, attr.columns[0].default)
            for attr in cast(Mapper[Job], inspect(Job)).column_attrs if attr.key != "id"]


def _job_param(column: Column[Any]) -> Any:
    """A parameter for one column of a new job (`j_`: a parameter may not take the name of a column
    the INSERT sets); a JSON column stores None as SQL NULL, as the ORM leaves it out."""
    kind = JSON(none_as_null=True) if isinstance(column.type, JSON) else column.type
    return bindparam(f"j_{column.key}", type_=kind)


# Built once: building an INSERT of 39 columns (and its cache key) cost more than running it.
_INSERT_JOB = insert(_JOBS).values({c.key: _job_param(c) for c in _JOBS.c if c.key != "id"}).returning(_JOBS.c.id)
# PostgreSQL: the job and its first event in one statement, one round trip instead of two.
# (SQLite cannot INSERT inside WITH; a statement there is a call, not a round trip.)
_NEW_JOB = _INSERT_JOB.cte("new_job")
_EVENT_COLUMNS = ("type", "message", "data", "created_at")
_INSERT_JOB_AND_EVENT = (
    insert(_EVENTS).add_cte(_NEW_JOB)
    .from_select(["job_id", "seq", "attempt", *_EVENT_COLUMNS],
                 select(_NEW_JOB.c.id, literal(1), literal(0),
                        *(bindparam(f"e_{name}", type_=_EVENTS.c[name].type) for name in _EVENT_COLUMNS)))
    .returning(_EVENTS.c.job_id)
)


def _insert_one(session: Session, job: Job) -> None:
    """INSERT one job and its first event with Core; the job becomes detached with every column set.

    The ORM's flush of one object (unit of work, identity bookkeeping, a statement built per
    flush) cost several times the INSERT itself. The defaults are applied here, so the object
    holds what the row holds; it joins the session before the commit (`_start_and_commit`).
    """
    job.event_seq = 1  # the job's first event is numbered 1 in its INSERT: no UPDATE takes the number
    state = job.__dict__
    for attr, _, default in _COLUMNS:
        if attr not in state:
            # A callable default takes the execution context (ours take nothing: utcnow, dict).
            setattr(job, attr, None if default is None else default.arg(None) if default.is_callable
                    else default.arg)
    values = {f"j_{column}": state[attr] for attr, column, _ in _COLUMNS}
    flush_pending(session)  # as the ORM's own INSERT would
    first = status_event(JobStatus.pending, message="submitted")
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        job.id = connection.execute(_INSERT_JOB, values).scalar_one()
        append_first_events(session, job_ids=[job.id], event=first)
    else:
        # The event as append_first_events writes and publishes it.
        event = {"seq": 1, "attempt": 0, "type": first["type"], "message": storable(first["message"]),
                 "data": storable_json(first["data"]), "created_at": utcnow()}
        job.id = connection.execute(_INSERT_JOB_AND_EVENT,
                                    {**values, **{f"e_{name}": event[name] for name in _EVENT_COLUMNS}}).scalar_one()
        queue_publish(session, job_channel(job.id), [event_public(event)])
    make_transient_to_detached(job)


def _start_and_commit(session: Session, jobs: list[Job], start: Callable[[Session, list[Job]], bool] | None) -> None:
    if start is None or not start(session, jobs):
        queue_wake(session, "submit")
    session.add_all(jobs)  # a job inserted with Core joins the session as loaded, as a flushed one would
    session.commit()


def _by_idempotency_key(session: Session, owner_id: int, key: str | None) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def _same_request(existing: Job, job: Job) -> Job:
    if (existing.kind, existing.params, existing.device_request) != (job.kind, job.params, job.device_request):
        raise IdempotencyConflict(
            f"Idempotency-Key {job.idempotency_key!r} was used for job {existing.id} with other contents",
            field="Idempotency-Key",
            value=job.idempotency_key,
            extra={"job_id": existing.id},
        )
    return existing


def get_job(*, session: Session, job_id: int) -> Job:
    """One job; raises JobNotFound."""
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"no job has id {job_id}", field="job_id", value=job_id)
    return job


def owns(user: User, job: Job) -> bool:
    """Whether `user` may change the job and read its contents: its owner, or an admin."""
    return job.owner_id == user.id or user.is_admin


def readable_job(*, session: Session, job_id: int, user: User) -> Job:
    """A job whose log, metrics and artifacts `user` may read (its owner, or an admin); raises Forbidden."""
    job = get_job(session=session, job_id=job_id)
    if not owns(user, job):
        raise Forbidden(
            f"job {job_id} belongs to another member: only its owner and admins read its log, metrics "
            "and artifacts",
            field="job_id",
            value=job_id,
        )
    return job


def list_jobs(
    *,
    session: Session,
    statuses: Iterable[str] = (),
    owner_id: int | None = None,
    kind: str | None = None,
    batch_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> tuple[list[Job], int | None]:
    """Jobs newest first, a page at a time; returns the page and the cursor of the next one."""
    stmt = select(Job)
    statuses = list(statuses)
    if statuses:
        stmt = stmt.where(Job.status.in_(statuses))
    if owner_id is not None:
        stmt = stmt.where(Job.owner_id == owner_id)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    if batch_id is not None:
        stmt = stmt.where(Job.batch_id == batch_id)
    if before_id is not None:
        stmt = stmt.where(Job.id < before_id)
    jobs = list(session.scalars(stmt.order_by(Job.id.desc()).limit(limit + 1)))
    next_cursor = jobs[limit - 1].id if len(jobs) > limit else None
    return jobs[:limit], next_cursor
