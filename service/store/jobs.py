"""Jobs and their lifecycle: pending → dispatched → running → succeeded | failed | cancelled.

Every transition is one conditional UPDATE on (id, status[, attempt]); the caller learns
from the returned row count whether it won. A job's record (its insert, reads by id or page)
is `store.job_records`'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from service.db import changed, flush_pending
from service.errors import Forbidden, JobFinished
from service.live import jobs_channel, queue_publish, queue_wake
from service.models import Artifact, FailReason, Job, JobStatus, User, utcnow
from service.store import job_statements as statements
from service.store.allocations import allocate, release
from service.store.events import append_events, status_event, storable, storable_json
from service.store.job_records import get_job, owns

ACTIVE = (JobStatus.pending, JobStatus.dispatched, JobStatus.running)


def _transition(
    session: Session,
    *,
    job_id: int,
    from_statuses: Sequence[str],
    attempt: int,
    values: dict[str, Any],
    reason: str | None = None,
    message: str = "",
    events: Sequence[dict[str, Any]] = (),
    unless_cancelled: bool = False,
) -> bool:
    """Apply one conditional UPDATE (the job in one of `from_statuses`, on `attempt`, and if
    `unless_cancelled` not asked to cancel) and, if it won, record the status event under the number it took.

    `events` (a job's last log lines) are recorded just before the status event, under the same
    UPDATE. A move out of dispatched/running frees every device the job held in the same transaction.
    """
    # The events' numbers are taken in the same UPDATE: one statement per state change.
    # ...and the attempt the job is on after it, which the status event carries.
    numbers = 1 + len(events)
    if session.identity_map.get(identity_key(Job, job_id)) is not None:
        # The job is loaded (a cancel, a reaper, a submit placing its own job): the ORM's UPDATE
        # sets the object's attributes to what it wrote, and its callers read them.
        fence = [Job.status.in_(from_statuses), Job.attempt == attempt]
        if unless_cancelled:
            fence.append(Job.cancel_requested_at.is_(None))
        won = session.execute(
            update(Job).where(Job.id == job_id, *fence)
            .values(**values, event_seq=Job.event_seq + numbers).returning(Job.event_seq, Job.attempt)
        ).one_or_none()
    else:
        # No object to keep in step (a worker's finish, a placement): the statement built once.
        flush_pending(session)
        params = {f"p_{c}": v for c, v in values.items()}
        won = session.execute(
            statements.transition(tuple(values), len(from_statuses), unless_cancelled),
            {**params, "p_id": job_id, "p_fence": attempt, "p_numbers": numbers,
             "p_from": from_statuses[0] if len(from_statuses) == 1 else list(from_statuses)},
        ).one_or_none()
    if won is None:
        return False
    seq, attempt = won
    status = values["status"]
    if status not in (JobStatus.dispatched, JobStatus.running):
        release(session, job_id=job_id)
    append_events(session, job_id=job_id, events=[*events, status_event(status, reason, message)],
                  numbered_to=seq, attempt=attempt)
    queue_publish(session, jobs_channel(), {"id": job_id, "status": status, "reason": reason})
    return True


def request_cancel(*, session: Session, job_id: int, user: User) -> Job:
    """Cancel a job: at once if it has not started, else ask the running job to stop."""
    job = get_job(session=session, job_id=job_id)
    if not owns(user, job):
        raise Forbidden(
            f"job {job_id} belongs to another member: members cancel only their own jobs",
            field="job_id",
            value=job_id,
        )
    now = utcnow()
    for _ in range(5):  # each loop sees a newer status; a job moves at most a few times
        session.refresh(job)
        if JobStatus(job.status).is_final:
            raise JobFinished(f"job {job_id} already ended as {job.status}", field="job_id", value=job_id)
        if job.status in (JobStatus.pending, JobStatus.dispatched):
            won = _transition(
                session,
                job_id=job_id,
                from_statuses=[job.status],
                attempt=job.attempt,
                values={
                    "status": JobStatus.cancelled,
                    "reason": FailReason.cancelled,
                    "cancel_requested_at": now,
                    "cancelled_by": user.name,
                    "finished_at": now,
                },
                reason=FailReason.cancelled,
                message=f"cancelled by {user.name} before it started",
            )
        else:
            won = changed(session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.running, Job.attempt == job.attempt)
                .values(cancel_requested_at=job.cancel_requested_at or now, cancelled_by=user.name)
            )) == 1
            if won:
                append_events(
                    session,
                    job_id=job_id,
                    events=[{"type": "log", "message": f"cancel requested by {user.name}"}],
                )
        if won:
            queue_wake(session, "cancel")
            session.commit()
            session.refresh(job)
            return job
        session.rollback()
    raise JobFinished(f"job {job_id} kept changing state; try again", field="job_id", value=job_id)


def mark_dispatched(*, session: Session, job_id: int, attempt: int, device_id: str,
                    devices: Sequence[str] = (), at: datetime | None = None) -> int | None:
    """pending → dispatched on `device_id` (in the dispatcher's transaction), holding `devices`
    (a gang's, the leader `device_id` first; default just that one) since `at` (now); the new attempt."""
    new_attempt = attempt + 1
    held = list(devices) or [device_id]
    won = _transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.pending],
        attempt=attempt,
        values={
            "status": JobStatus.dispatched,
            "attempt": new_attempt,
            "device_id": device_id,
            "device_ids": held,
            "dispatched_at": at or utcnow(),
            "reason": None,
        },
        message=f"dispatched to {', '.join(held)} (attempt {new_attempt})",
    )
    if won:
        allocate(session, job_id=job_id, attempt=new_attempt, device_ids=held)
    return new_attempt if won else None


def undispatch(*, session: Session, job_id: int, attempt: int, why: str) -> bool:
    """dispatched → pending: the message was lost, not sent, or never claimed."""
    won = _transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.dispatched],
        attempt=attempt,
        values={"status": JobStatus.pending, "device_id": None, "device_ids": None, "dispatched_at": None},
        message=f"back to pending: {why}",
    )
    if won:
        queue_wake(session, "undispatch")
        session.commit()
    return won


@dataclass(frozen=True)
class Claim:
    """What a worker needs of the job it claimed, read by the claim's own UPDATE."""

    job_id: int
    attempt: int
    kind: str
    params: dict[str, Any]
    seed: int
    gpu_memory_gb: float | None
    started_at: datetime | None


def claim_job(
    *, session: Session, job_id: int, attempt: int, device_id: str, worker_id: str, pid: int
) -> Claim | None:
    """dispatched → running, for this device and attempt only; None when fenced out.

    Two statements on the job's start path (the UPDATE that returns what the worker needs,
    and the status event's INSERT), both Core: the claim loads no ORM object (see
    docs/design.md, "The claim is two statements").

    Idempotent for its caller: when an earlier try committed but its answer was lost (the
    database went away at that moment), the row already running this attempt in this
    worker's process is returned, so the retry does not strand the job as `running`.
    """
    message = f"running on {device_id} (pid {pid})"
    ours = {"p_id": job_id, "p_fence": attempt, "p_worker_id": worker_id, "p_pid": pid}
    row = session.execute(statements.CLAIM, {**ours, "p_device_id": device_id, "p_started_at": utcnow()}).one_or_none()
    if row is None:
        session.rollback()
        # Ours already (a retry after a commit whose answer was lost)?
        row = session.execute(statements.CLAIMED_BEFORE, ours).one_or_none()
        session.rollback()
        return None if row is None else Claim(job_id, attempt, row.kind, row.params, row.seed, row.gpu_memory_gb,
                                              row.started_at)
    append_events(session, job_id=job_id, events=[status_event(JobStatus.running, None, message)],
                  numbered_to=row.event_seq, attempt=attempt)
    queue_publish(session, jobs_channel(), {"id": job_id, "status": JobStatus.running, "reason": None})
    session.commit()
    return Claim(job_id, attempt, row.kind, row.params, row.seed, row.gpu_memory_gb, row.started_at)


def cancel_requested(*, session: Session, job_id: int) -> bool:
    """Whether someone asked to cancel the job, read without loading it."""
    return session.execute(statements.CANCEL_REQUESTED, {"p_id": job_id}).scalar() is not None


def finish_job(
    *,
    session: Session,
    job_id: int,
    attempt: int,
    status: JobStatus,
    reason: str | None = None,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    peak_memory_mb: float | None = None,
    artifacts: Sequence[tuple[str, str, int]] = (),
    from_statuses: Sequence[JobStatus] = (JobStatus.running,),
    then: Callable[[Session], bool] | None = None,
    events: Sequence[dict[str, Any]] = (),
    runtime: dict[str, Any] | None = None,
    started_at: datetime | None = None,
    unless_cancelled: bool = False,
) -> bool:
    """Write a job's end state, result, artifacts, last events and runtime in one commit; False when fenced out.

    `then`, called before the commit once the job's devices are free, may place the next
    jobs in this same transaction (returning True); otherwise the dispatcher is woken.
    `started_at`: when the attempt started, if the caller knows (its `Claim`); else the job is read.
    `unless_cancelled`: fenced out too if a cancel was asked for (the caller ends it cancelled instead).
    """
    error = storable(error) if error is not None else None
    result = storable_json(result) if result is not None else None
    if started_at is None:
        job = session.get(Job, job_id)
        started_at = job.started_at if job else None
    now = utcnow()
    run_seconds = (now - started_at).total_seconds() if started_at else None
    won = _transition(
        session,
        job_id=job_id,
        from_statuses=from_statuses,
        attempt=attempt,
        values={
            "status": status,
            "reason": reason,
            "error": error,
            "result": result,
            "peak_memory_mb": peak_memory_mb,
            "finished_at": now,
            "run_seconds": run_seconds,
            **({"runtime": runtime} if runtime is not None else {}),
        },
        reason=reason,
        message=error.splitlines()[-1][:500] if error else "",
        events=events,
        unless_cancelled=unless_cancelled,
    )
    if not won:
        session.rollback()
        return False
    for name, content_type, size in artifacts:
        session.add(Artifact(job_id=job_id, name=name, content_type=content_type, size_bytes=size))
    if then is None or not then(session):
        queue_wake(session, "finish")
    session.commit()
    return True


def release_lost_job(*, session: Session, job_id: int, attempt: int, why: str) -> str | None:
    """A running job whose process is gone: back to pending while runs remain, else failed.

    A job whose cancel was requested ends cancelled instead. Returns the new status, or
    None when the job had moved on already.
    """
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.status != JobStatus.running or job.attempt != attempt:
        return None
    now = utcnow()
    if job.cancel_requested_at is not None:
        values: dict[str, Any] = {"status": JobStatus.cancelled, "reason": FailReason.cancelled, "finished_at": now}
        reason: str | None = FailReason.cancelled
    elif job.runs < job.max_attempts:
        values = {"status": JobStatus.pending, "device_id": None, "device_ids": None, "pid": None, "worker_id": None}
        reason = None
    else:
        values = {
            "status": JobStatus.failed,
            "reason": FailReason.worker_lost,
            "error": f"{why} (after {job.runs} runs)",
            "finished_at": now,
        }
        reason = FailReason.worker_lost
    if not _transition(session, job_id=job_id, from_statuses=[JobStatus.running], attempt=attempt, values=values,
                       reason=reason, message=why):
        session.rollback()
        return None
    queue_wake(session, "release")
    session.commit()
    return values["status"]


def is_cancel_requested(*, session: Session, job_id: int, attempt: int) -> bool:
    """Whether the running attempt was asked to stop (polled by the job, cheaply)."""
    row = session.execute(
        select(Job.cancel_requested_at, Job.status, Job.attempt).where(Job.id == job_id)
    ).first()
    if row is None:
        return True
    return row.cancel_requested_at is not None or row.status != JobStatus.running or row.attempt != attempt


def running_jobs_of_worker(*, session: Session, worker_id: str) -> list[Job]:
    """The jobs a worker incarnation has claimed and not finished."""
    return list(
        session.scalars(
            select(Job).where(and_(Job.worker_id == worker_id, Job.status == JobStatus.running))
        )
    )
