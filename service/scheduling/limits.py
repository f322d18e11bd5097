"""Per-member limits: jobs held (dispatched or running), GPUs held, jobs pending; 0 = unlimited.

The first two hold a job back in the queue (reason `member_limit`); the last refuses a
submission with 429 `limit_exceeded`, naming the limit and its value.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.accounting.shares import device_share
from service.errors import LimitExceeded
from service.models import Device, DeviceKind, Job, JobStatus, User
from service.scheduling.rooms import MemberLimits, MemberLoad
from service.settings import Settings


def member_limits(settings: Settings) -> MemberLimits:
    """The limits the dispatcher applies, from the settings."""
    return MemberLimits(max_jobs=settings.member_max_running_jobs, max_gpus=settings.member_max_gpus)


def member_loads(*, session: Session) -> dict[int, MemberLoad]:
    """What each member holds now: dispatched and running jobs, and their Σ share of GPUs."""
    loads: dict[int, MemberLoad] = {}
    rows = session.execute(
        select(Job.owner_id, Job.gpu_memory_gb, Job.gpus, Device.kind, Device.slots, Device.memory_total_mb)
        .join(Device, Device.id == Job.device_id)
        .where(Job.status.in_([JobStatus.dispatched, JobStatus.running]))
    )
    for row in rows:
        load = loads.setdefault(row.owner_id, MemberLoad())
        load.jobs += 1
        if row.kind == DeviceKind.cuda:
            # A gang holds each of its N devices alone.
            load.gpus += row.gpus * device_share(device_kind=row.kind, slots=row.slots,
                                                 memory_total_mb=row.memory_total_mb,
                                                 gpu_memory_gb=row.gpu_memory_gb)
    return loads


def check_pending_limit(*, session: Session, settings: Settings, user: User, adding: int = 1) -> None:
    """Refuse `adding` new jobs from a member whose pending jobs would then pass the limit."""
    limit = settings.member_max_pending_jobs
    if not limit:
        return
    pending = session.scalar(
        select(func.count(Job.id)).where(Job.owner_id == user.id, Job.status == JobStatus.pending)
    ) or 0
    if pending + adding > limit:
        batch = f"; this batch adds {adding}" if adding > 1 else ""
        raise LimitExceeded(
            f"{user.name} has {pending} pending jobs{batch} and member_max_pending_jobs is {limit}: "
            "wait for some to start, or cancel some",
            field="member_max_pending_jobs",
            value=limit,
            extra={"limit": "member_max_pending_jobs", "pending": pending, "adding": adding},
        )
