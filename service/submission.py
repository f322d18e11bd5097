"""Recording a checked request as a pending job, placed at once when it finds the queue empty.

What needs the member's turn happens here (the pending limit, the Idempotency-Key and its
replay); the checks that need no lock, and the job a request makes, are `service.job_checks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from service.errors import IdempotencyConflict
from service.job_checks import all_devices, check_request, new_job
from service.models import Job, JobStatus, User
from service.scheduling.limits import check_pending_limit
from service.scheduling.starting import Dispatch, pending_and_room, place_pending
from service.schemas import JobCreate
from service.settings import Settings
from service.store.job_records import insert_job


def submit(*, session: Session, settings: Settings, user: User, body: JobCreate,
           idempotency_key: str | None) -> tuple[Job, bool, list[Dispatch]]:
    """Validate and record a job as pending; returns it, whether it is new, and what to send.

    A new job that finds no other pending job is placed in the same transaction (it orders
    nothing, so placing it costs one short plan): the caller sends what was dispatched.
    """
    devices = all_devices(session)
    checked = check_request(session=session, settings=settings, user=user, body=body, devices=devices)
    # On SQLite this transaction has held the only write lock since its first statement (BEGIN
    # IMMEDIATE), so the devices read above are still what a plan would read: it takes them. On
    # PostgreSQL a device may change while the locks below wait, so the plan reads them again.
    serialised = session.get_bind().dialect.name == "sqlite"
    # What follows reads and then writes: under a pending limit or an Idempotency-Key a member's
    # submissions go one at a time (a row lock on PostgreSQL; the IMMEDIATE write transaction
    # on SQLite), so two racing submits cannot both see room under the limit, or both miss the key.
    lock_member(session=session, settings=settings, user=user, idempotency_key=idempotency_key)
    if idempotency_key:
        existing = job_by_idempotency_key(session=session, owner_id=user.id, key=idempotency_key)
        if existing is not None:
            # Before the limit: a retried submit at the limit gets its job back, not a 429.
            check_replay(existing, body=body, params=checked.params, device_request=checked.request.canonical(),
                         timeout_s=checked.timeout_s, max_attempts=checked.max_attempts)
            return existing, False, []
    check_pending_limit(session=session, settings=settings, user=user)
    job = new_job(session=session, settings=settings, user=user, checked=checked, idempotency_key=idempotency_key)
    placed: list[Dispatch] = []

    def start_if_alone(session: Session, new: list[Job]) -> bool:
        waiting, room = pending_and_room(session, besides=new[0].id)
        if waiting:
            return False  # the dispatcher orders the queue (priority, fair share, age)
        if not room:
            return False  # every device is full: the finish that frees one places it (or wakes the dispatcher)
        placed.extend(place_pending(session=session, settings=settings, devices=devices if serialised else None))
        return show_dispatched(new, placed) == 1

    # The key was looked up above under the member's lock: insert_job need not look again.
    job, created = insert_job(session=session, job=job, start=start_if_alone, key_looked_up=True)
    return job, created, placed


def show_dispatched(jobs: Sequence[Job], placed: Sequence[Dispatch]) -> int:
    """Show each placed job as dispatched, on its device, as the UPDATE wrote it (set on the
    object, not read back); returns how many of `jobs` were placed."""
    by_id = {d.job_id: d for d in placed}
    shown = 0
    for job in jobs:
        if (mine := by_id.get(job.id)) is None:
            continue
        for name, value in (("status", JobStatus.dispatched), ("attempt", mine.attempt),
                            ("device_id", mine.device_id), ("device_ids", list(mine.devices)),
                            ("dispatched_at", mine.dispatched_at), ("reason", None)):
            set_committed_value(job, name, value)
        shown += 1
    return shown


_LOCK_MEMBER = select(User.id).where(User.id == bindparam("user_id", type_=User.id.type)).with_for_update()
_BY_KEY = select(Job).where(Job.owner_id == bindparam("owner_id", type_=Job.owner_id.type),
                            Job.idempotency_key == bindparam("key", type_=Job.idempotency_key.type))


def lock_member(*, session: Session, settings: Settings, user: User, idempotency_key: str | None) -> None:
    """Hold this member's row until the transaction ends, where what the submit reads next depends
    on it: the pending limit's count, or the Idempotency-Key's lookup. Without either, a member's
    submits have nothing to take turns over (the placement lock orders their plans).

    PostgreSQL only: SQLite's write transaction is already serialized, and ignores FOR UPDATE.
    """
    if not (settings.member_max_pending_jobs or idempotency_key):
        return
    if session.get_bind().dialect.name != "sqlite":
        session.connection().execute(_LOCK_MEMBER, {"user_id": user.id})


def job_by_idempotency_key(*, session: Session, owner_id: int, key: str) -> Job | None:
    """The job a member submitted earlier under this Idempotency-Key, if any."""
    return session.scalar(_BY_KEY, {"owner_id": owner_id, "key": key})


def check_replay(existing: Job, *, body: JobCreate, params: dict[str, Any], device_request: str,
                 timeout_s: int, max_attempts: int, key: str | None = None) -> None:
    """Refuse a retry whose contents differ from the first request in any field (409); `key`:
    the Idempotency-Key when the job does not carry it (a batch's later jobs)."""
    key = key or existing.idempotency_key
    asked: dict[str, Any] = {
        "kind": body.kind, "params": params, "device": device_request, "priority": body.priority,
        "gpu_memory_gb": body.gpu_memory_gb, "timeout_s": timeout_s, "max_attempts": max_attempts,
    }
    stored: dict[str, Any] = {
        "kind": existing.kind, "params": existing.params, "device": existing.device_request,
        "priority": existing.priority, "gpu_memory_gb": existing.gpu_memory_gb,
        "timeout_s": existing.timeout_s, "max_attempts": existing.max_attempts,
    }
    if body.seed is not None:  # no seed asked: the first request's random seed stands
        asked["seed"], stored["seed"] = body.seed, existing.seed
    changed = sorted(name for name in asked if asked[name] != stored[name])
    if changed:
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was used for job {existing.id} with other "
            f"{', '.join(changed)}: use a new key for a new request",
            field="Idempotency-Key", value=key,
            extra={"job_id": existing.id, "changed": changed},
        )
