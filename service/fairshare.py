"""Fair share: each member's recent use of the devices, decayed by a half-life.

A member's usage is the allocated device-seconds (accounting's share × run time) of their
running and finished jobs, each weighted by how long ago it ended (1 for a running job,
½ one half-life ago). It is kept per device kind: GPU jobs are ordered by GPU-seconds and
CPU jobs by CPU slot-seconds, so a member's CPU work never pushes their GPU jobs back.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.accounting import allocated_seconds, decay_weight, device_share
from service.models import Device, Job, JobStatus

# Usage that ended longer ago than this many half-lives weighs under 0.1 %: it is not read.
HORIZON_HALF_LIVES = 10


def member_usage(*, session: Session, half_life_s: float, now: datetime) -> dict[tuple[int, str], float]:
    """Decayed allocated device-seconds per (member id, device kind)."""
    stmt = (
        select(Job.owner_id, Job.status, Job.gpu_memory_gb, Job.started_at, Job.finished_at,
               Device.kind, Device.slots, Device.memory_total_mb)
        .join(Device, Device.id == Job.device_id)
        .where(Job.started_at.is_not(None))
    )
    if half_life_s > 0:
        horizon = now - timedelta(seconds=half_life_s * HORIZON_HALF_LIVES)
        stmt = stmt.where(or_(Job.status == JobStatus.running, Job.finished_at >= horizon))
    else:
        stmt = stmt.where(or_(Job.status == JobStatus.running, Job.finished_at.is_not(None)))
    usage: dict[tuple[int, str], float] = defaultdict(float)
    for row in session.execute(stmt):
        if row.status != JobStatus.running and row.finished_at is None:
            continue  # dispatched again after a lost run: its new run will count
        share = device_share(device_kind=row.kind, slots=row.slots, memory_total_mb=row.memory_total_mb,
                             gpu_memory_gb=row.gpu_memory_gb)
        seconds = allocated_seconds(share=share, started_at=row.started_at, finished_at=row.finished_at, now=now)
        usage[(row.owner_id, row.kind)] += seconds * decay_weight(ended_at=row.finished_at or now, now=now,
                                                                  half_life_s=half_life_s)
    return dict(usage)
