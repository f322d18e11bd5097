"""Placing pending jobs and sending each to its device's queue, from the dispatcher or a submit.

Placement is serialised: two placers that both saw a device free would both send it a job.
On SQLite every write transaction is (BEGIN IMMEDIATE); on PostgreSQL a transaction-scoped
advisory lock does it, taken before the queue is read. The dispatcher places in its pass; a
submit that finds the queue otherwise empty places its own job in its own transaction, which
saves the wake-up hop and one commit (see docs/design.md, "Starting a job at submit").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from celery import Celery
from sqlalchemy import Select, Table, bindparam, func, select, text
from sqlalchemy.orm import Session

from service.db import flush_pending
from service.models import Allocation, Device, DeviceState, Job, JobStatus, utcnow
from service.queues import RUN_JOB, device_queue
from service.scheduling.queue_state import pending_jobs, plan_queue
from service.settings import Settings
from service.store.jobs import mark_dispatched, undispatch

log = logging.getLogger("gpulab.dispatcher")

# Any fixed 64-bit number: the key of PostgreSQL's advisory lock that serialises placement.
PLACEMENT_LOCK_KEY = 0x6770756C6162  # "gpulab"
# Up to this many pending jobs, a finishing job places the next ones itself (one plan of a
# short queue costs a few milliseconds); beyond it, the dispatcher does.
SHORT_QUEUE = 100


@dataclass(frozen=True)
class Dispatch:
    """A job marked dispatched (committed by the caller), to be sent once the commit is done."""

    job_id: int
    attempt: int
    device_id: str
    timeout_s: int
    devices: tuple[str, ...] = ()  # every device it holds, the leader first
    dispatched_at: datetime | None = None


# Statements a finish runs every job, built once (building one cost more than running it).
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_JOBS = cast(Table, Job.__table__)
_SOME_PENDING = select(_JOBS.c.id).where(_JOBS.c.status == JobStatus.pending).limit(SHORT_QUEUE + 1)


def lock_placement(session: Session) -> None:
    """Hold the placement lock until this transaction ends (SQLite: already held by BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_LOCK, {"key": PLACEMENT_LOCK_KEY})


def place_pending(*, session: Session, settings: Settings, devices: Sequence[Any] | None = None,
                  pending: Sequence[Any] | None = None) -> list[Dispatch]:
    """Mark dispatched every pending job that can start now, in the caller's transaction
    (`devices`, `pending`: as `queue_state.plan_queue` takes them, read under the placement lock)."""
    lock_placement(session)
    view = plan_queue(session, settings=settings, devices=devices, pending=pending)
    rows = {j.id: j for j in view.jobs}
    placed = []
    now = utcnow()
    for job_id, device_id in view.plan.placements:
        row = rows[job_id]
        held = tuple(view.plan.allocations[job_id]) or (device_id,)
        attempt = mark_dispatched(session=session, job_id=job_id, attempt=row.attempt,
                                  device_id=device_id, devices=held, at=now)
        if attempt is not None:
            placed.append(Dispatch(job_id, attempt, device_id, row.timeout_s, held, now))
    return placed


def pending_and_room(session: Session, *, besides: int | None = None) -> tuple[bool, bool]:
    """Whether any job (other than `besides`) is pending, and whether some online device holds
    fewer jobs than its slots: one statement of two indexed reads.

    Only such a device can take a job (DeviceRoom.fit), so when none has room a plan would
    place nothing. A submit while every device is busy, and the dispatcher's pass it wakes,
    then skip the plan and SQLite's write lock that the running jobs' claims and finishes wait on.
    """
    flush_pending(session)
    stmt = _PENDING_AND_ROOM if besides is None else _PENDING_BESIDES_AND_ROOM
    waiting, open_ = session.connection().execute(stmt, {"besides": besides}).one()
    return waiting is not None, open_ is not None


def _pending_and_room(besides: bool) -> Select[tuple[Any, Any]]:
    """`pending_and_room`'s statement, built once (a submit sends it each time: building it cost
    more than running it), with `:besides` as a parameter."""
    pending = select(Job.id).where(Job.status == JobStatus.pending)
    if besides:
        pending = pending.where(Job.id != bindparam("besides", type_=Job.id.type))
    held = (select(func.count()).select_from(Allocation).where(Allocation.device_id == Device.id)
            .correlate(Device).scalar_subquery())
    room = select(Device.id).where(Device.state == DeviceState.online, Device.slots > held)
    return select(pending.limit(1).scalar_subquery(), room.limit(1).scalar_subquery())


_PENDING_AND_ROOM = _pending_and_room(False)
_PENDING_BESIDES_AND_ROOM = _pending_and_room(True)


def place_if_queue_short(*, session: Session, settings: Settings, into: list[Dispatch]) -> bool:
    """Place pending jobs (appending to `into`) when at most SHORT_QUEUE are pending; whether it did.

    A finishing job frees a slot: placing the next one in the finish's own transaction saves
    the wake-up hop and the dispatcher's commit. A long queue is left to the dispatcher,
    which plans once for many finishes instead of once per finish.
    """
    flush_pending(session)
    # On SQLite the write transaction holds the lock already: the probe reads the rows the plan
    # needs (all of them, in a short queue), one statement fewer. PostgreSQL probes ids, and the
    # plan reads the rows again under the placement lock.
    sqlite = session.get_bind().dialect.name == "sqlite"
    probe = pending_jobs(session, limit=SHORT_QUEUE + 1) if sqlite else session.execute(_SOME_PENDING).all()
    if not 0 < len(probe) <= SHORT_QUEUE:
        return False
    into.extend(place_pending(session=session, settings=settings, pending=probe if sqlite else None))
    return True


def send_dispatched(celery: Celery, writing: Callable[[], AbstractContextManager[Session]],
                    dispatches: Iterable[Dispatch], *, retry: bool = True) -> int:
    """Send committed dispatches; one the broker refuses goes back to pending (in a transaction
    of `writing`). Returns how many went.

    `retry=False` (a submit) gives up at the first refusal instead of waiting out Celery's
    retries: the job goes back to pending, and the dispatcher sends it when the broker returns.
    A submit passes its own committed session, so a request never holds two connections.
    """
    sent = 0
    for d in dispatches:
        try:
            celery.send_task(RUN_JOB, args=[d.job_id, d.attempt], queue=device_queue(d.device_id),
                             soft_time_limit=d.timeout_s, retry=retry)
            sent += 1
        except Exception as exc:  # the broker is down: the job goes back to pending
            log.warning("sending job %s to %s failed: %s", d.job_id, d.device_id, exc)
            with writing() as session:
                undispatch(session=session, job_id=d.job_id, attempt=d.attempt,
                           why=f"the broker refused the message ({type(exc).__name__})")
    return sent
