"""The usage report: device-hours allocated and used per member, device or kind over a window.

At 100,000 jobs a month holds ~50,000: accounted one by one in Python they cost seconds per
read (building each row and its datetimes, not the SQL). A job whose run lies whole in the
window and is folded (service.accounting.rollups: final, its readings stored), or that never started, is
one among many alike: its hours are share × run time, so those are summed in SQL per (group,
status, the share's inputs) and each sum multiplied by its share once. The rest (running, just
ended, cut by the window's start, gangs) goes through `usage._job_usage` one by one: they are few.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, not_, or_, select
from sqlalchemy.orm import Session

from service.accounting.rollups import seconds_between
from service.accounting.shares import device_share
from service.accounting.usage import JobUsage, _job_rows, _job_usage, gang_utilization
from service.errors import InvalidRequest
from service.models import Device, DeviceKind, Job, User, utcnow

GROUPS = ("member", "device", "kind")


@dataclass
class UsageRow:
    key: str
    jobs: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    gpu_hours: float = 0.0
    gpu_used_hours: float = 0.0
    cpu_hours: float = 0.0
    cpu_used_hours: float = 0.0
    mean_wait_s: float | None = None
    _wait_s: float = field(default=0.0, repr=False)
    _waits: int = field(default=0, repr=False)

    def add(self, *, status: str, jobs: int, device_kind: str | None, hours: float, used: float) -> None:
        self.jobs += jobs
        self.outcomes[status] = self.outcomes.get(status, 0) + jobs
        if device_kind == DeviceKind.cuda:
            self.gpu_hours += hours
            self.gpu_used_hours += used
        elif device_kind is not None:
            self.cpu_hours += hours
            self.cpu_used_hours += used


def _shares(u: JobUsage, group_by: str, per_device: dict[str, float]) -> list[tuple[str, float, float]]:
    """(group, hours, used hours) of one job; by device, each of a gang's N devices holds 1/N of it."""
    hours, used = u.allocated_seconds / 3600, (u.used_seconds or 0.0) / 3600
    if group_by != "device":
        return [(u.owner if group_by == "member" else u.kind, hours, used)]
    if len(u.device_ids) < 2:
        return [(u.device_id or "(not placed)", hours, used)]
    part = hours / len(u.device_ids)
    return [(d, part, part * per_device.get(d, 0.0) / 100) for d in u.device_ids]


def _alike(since: datetime) -> Any:
    """Single-device jobs in the window with nothing to clip or measure live, as SQL: folded ones
    whose run lies in it, and those that never started (pending, dispatched, cancelled before)."""
    return and_(Job.gpus == 1, or_(Job.finished_at.is_(None), Job.finished_at >= since),
                or_(Job.started_at.is_(None), and_(Job.utilization_readings.is_not(None), Job.started_at >= since)))


def _summed(session: Session, since: datetime, group_by: str) -> list[Any]:
    """The alike jobs, summed per (group, status, the share's inputs)."""
    run = func.coalesce(seconds_between(session, Job.started_at, Job.finished_at), 0.0)
    mean = Job.utilization_sum / func.nullif(Job.utilization_readings, 0)
    group = {"member": User.name, "kind": Job.kind, "device": Job.device_id}[group_by]
    keys = (group.label("key"), Job.status, Device.kind.label("device_kind"), Device.slots, Device.memory_total_mb,
            Job.gpu_memory_gb)
    return list(session.execute(
        select(*keys, func.count().label("jobs"), func.sum(run).label("run_s"),
               func.sum(run * mean).label("run_x_util"), func.count(Job.started_at).label("waits"),
               func.sum(seconds_between(session, Job.created_at, Job.started_at)).label("wait_s"))
        .join(User, User.id == Job.owner_id).outerjoin(Device, Device.id == Job.device_id)
        .where(_alike(since)).group_by(*keys)))


def usage_report(session: Session, *, since: datetime, group_by: str, now: datetime | None = None
                 ) -> list[UsageRow]:
    """Per member, device or kind: device-hours allocated and used in [since, now], jobs by outcome, mean wait.

    A job counts when it overlaps the window (it ended in it, or has not ended); its hours are
    clipped to the window; its wait counts when it started in the window.
    """
    if group_by not in GROUPS:
        raise InvalidRequest(f"group_by={group_by!r}: use one of {', '.join(GROUPS)}", field="group_by",
                             value=group_by)
    now = now or utcnow()
    groups: dict[str, UsageRow] = {}
    for s in _summed(session, since, group_by):
        key = s.key or "(not placed)"
        share = device_share(device_kind=s.device_kind or DeviceKind.cpu, slots=s.slots or 1,
                             memory_total_mb=s.memory_total_mb, gpu_memory_gb=s.gpu_memory_gb)
        g = groups.setdefault(key, UsageRow(key=key))
        g.add(status=s.status, jobs=s.jobs, device_kind=s.device_kind, hours=share * float(s.run_s) / 3600,
              used=share * float(s.run_x_util or 0.0) / 100 / 3600)
        g._waits += s.waits
        g._wait_s += float(s.wait_s or 0.0)
    rows = _job_rows(session, and_(or_(Job.finished_at.is_(None), Job.finished_at >= since), not_(_alike(since))),
                     since, now)
    gangs = gang_utilization(session, rows, since, now)
    for job in rows:
        u = _job_usage(job, since, now, gangs.get(job.id))
        for key, hours, used in _shares(u, group_by, gangs.get(job.id, {})):
            g = groups.setdefault(key, UsageRow(key=key))
            g.add(status=job.status, jobs=1, device_kind=u.device_kind, hours=hours, used=used)
            if job.started_at is not None and job.started_at >= since and u.wait_seconds is not None:
                g._waits += 1
                g._wait_s += u.wait_seconds
    for g in groups.values():
        g.mean_wait_s = g._wait_s / g._waits if g._waits else None
    return sorted(groups.values(), key=lambda g: (-g.gpu_hours, -g.cpu_hours, g.key))
