"""Allocations: which devices a job holds for its current attempt (one row each, a gang N).

Only `store.jobs`' transitions call `allocate` and `release`, inside the transaction of the move
that places or frees the job, so the rows and the job's status never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, bindparam, delete, insert, select
from sqlalchemy.orm import Session

from service.models import Allocation, Device, Job, JobStatus

# Core, built once: nothing reads these rows back as objects (no Allocation is ever loaded to
# keep in step), and building the statement cost more than running it.
_ALLOCATIONS = cast(Table, Allocation.__table__)
_ALLOCATE = insert(_ALLOCATIONS)
_RELEASE = delete(_ALLOCATIONS).where(_ALLOCATIONS.c.job_id == bindparam("p_job_id"))


def allocate(session: Session, *, job_id: int, attempt: int, device_ids: Sequence[str]) -> None:
    """Record that the job holds these devices for `attempt`; the first is its leader."""
    # Core: the ORM's flush of them at the commit was a third of a dispatch's cost.
    session.execute(_ALLOCATE,
                    [{"job_id": job_id, "device_id": d, "attempt": attempt, "leader": i == 0, "rank": i}
                     for i, d in enumerate(device_ids)])


def release(session: Session, *, job_id: int) -> None:
    """Free every device the job holds, together."""
    session.execute(_RELEASE, {"p_job_id": job_id})


def job_devices(*, session: Session, job_id: int) -> list[Device]:
    """The devices a job holds now, in rank (bus) order; empty when it holds none."""
    return list(session.scalars(
        select(Device).join(Allocation, Allocation.device_id == Device.id)
        .where(Allocation.job_id == job_id).order_by(Allocation.rank)
    ))


def jobs_on_devices(*, session: Session) -> dict[str, list[int]]:
    """Device → the dispatched and running jobs that hold it (a gang's job on each of its devices)."""
    out: dict[str, list[int]] = {}
    rows = session.execute(
        select(Allocation.device_id, Allocation.job_id).join(Job, Job.id == Allocation.job_id)
        .where(Job.status.in_([JobStatus.dispatched, JobStatus.running])).order_by(Allocation.job_id)
    )
    for device_id, job_id in rows:
        out.setdefault(device_id, []).append(job_id)
    return out
