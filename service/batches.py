"""A sweep as one request: a batch of jobs checked entry by entry, recorded all or none.

Every entry passes the single submit's checks (`service.submission`); a refusal names its entry
(`jobs[3].params.lr`). The jobs share a batch id (the first job's id), and one placement places
what fits once they are in (docs/design.md, "A sweep is one request: `POST /jobs/batch`").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import GpulabError, IdempotencyConflict
from service.job_checks import Checked, all_devices, check_request, new_job
from service.models import Job, User
from service.scheduling.limits import check_pending_limit
from service.scheduling.starting import Dispatch, pending_and_room, place_pending
from service.schemas import JobCreate
from service.settings import Settings
from service.store.job_records import insert_jobs
from service.submission import check_replay, job_by_idempotency_key, lock_member, show_dispatched

T = TypeVar("T")


def submit_batch(*, session: Session, settings: Settings, user: User, bodies: Sequence[JobCreate],
                 idempotency_key: str | None = None) -> tuple[list[Job], bool, list[Dispatch]]:
    """Validate and record a batch (a sweep) as pending, all or none, in one transaction sharing
    a batch id; one placement then places what fits. Returns the jobs, whether they are new, and
    what to send.

    Each entry passes every check a single submit makes (the same functions); a refusal names
    its entry (`jobs[3].params.lr`) and nothing is recorded. An Idempotency-Key is kept on the
    batch's first job: a retry gets the batch back if every entry is the same.
    """
    devices = all_devices(session)
    checked = [_entry(i, check_request, session=session, settings=settings, user=user, body=body, devices=devices)
               for i, body in enumerate(bodies)]
    # As a single submit: the pending limit counts the whole batch.
    lock_member(session=session, settings=settings, user=user, idempotency_key=idempotency_key)
    if idempotency_key:
        first = job_by_idempotency_key(session=session, owner_id=user.id, key=idempotency_key)
        if first is not None:
            return _replayed_batch(session, first, checked, idempotency_key), False, []
    check_pending_limit(session=session, settings=settings, user=user, adding=len(checked))
    jobs = [_entry(i, new_job, session=session, settings=settings, user=user, checked=c,
                   idempotency_key=idempotency_key if i == 0 else None)
            for i, c in enumerate(checked)]
    placed: list[Dispatch] = []

    def place(session: Session, new: list[Job]) -> bool:
        if not pending_and_room(session)[1]:
            return False  # every device is full: finishes place them, as they free devices
        # One plan for the whole queue, this batch in it, ordered as the dispatcher orders it.
        placed.extend(place_pending(session=session, settings=settings))
        return show_dispatched(new, placed) == len(new)

    insert_jobs(session=session, jobs=jobs, start=place)
    return jobs, True, placed


def _replayed_batch(session: Session, first: Job, checked: Sequence[Checked], key: str) -> list[Job]:
    """The batch a retry's Idempotency-Key names, if every entry asks what it asked (else 409)."""
    earlier = list(session.scalars(select(Job).where(Job.batch_id == first.batch_id).order_by(Job.id))
                   ) if first.batch_id is not None else []
    if len(earlier) != len(checked):
        what = f"a batch of {len(earlier)} jobs" if earlier else f"job {first.id} alone"
        raise IdempotencyConflict(f"Idempotency-Key {key!r} was used for {what}, not a batch of {len(checked)}: "
                                  "use a new key for a new request", field="Idempotency-Key", value=key,
                                  extra={"job_id": first.id})
    for i, (job, c) in enumerate(zip(earlier, checked, strict=True)):
        _entry(i, check_replay, existing=job, body=c.body, params=c.params, device_request=c.request.canonical(),
               timeout_s=c.timeout_s, max_attempts=c.max_attempts, key=key)
    return earlier


def _entry(index: int, check: Callable[..., T], **kwargs: Any) -> T:
    """Run one batch entry's check; a refusal names the entry: field `jobs[3].params.lr`."""
    try:
        return check(**kwargs)
    except GpulabError as exc:
        where = f"jobs[{index}]"
        if exc.field is not None:
            named = f"{where}.{exc.field}"
            exc.detail = (named + exc.detail[len(exc.field):] if exc.detail.startswith(exc.field)
                          else f"{named}: {exc.detail}")
            exc.field = named
        else:
            exc.detail = f"{where}: {exc.detail}"
        for error in exc.extra.get("errors", []):
            error["field"] = f"{where}.{error['field']}"
        exc.extra["entry"] = index
        exc.args = (exc.detail,)
        raise
