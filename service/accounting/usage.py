"""Usage accounting: per job, and per member, device or kind over a window.

Every number here comes from `shares.allocated_seconds` (share × run time) and from the
device samples: a job's used device-seconds are its allocated seconds × the mean utilisation of
its devices while it ran (per-process utilisation does not exist on a shared card). A gang of N
counts N × its run time, its utilisation is the mean over its N devices, and per device each
holds 1/N of it. GPU and CPU devices are kept apart: a CPU-hour is not a GPU-hour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.orm import Session

from service.accounting.shares import allocated_seconds, device_share, run_seconds
from service.errors import InvalidRequest
from service.models import (
    FINAL_STATUSES,
    Device,
    DeviceKind,
    DeviceSample,
    Job,
    JobStatus,
    User,
    UTCDateTime,
    utcnow,
)

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
MAX_SPAN_S = 100 * 365 * 86400
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_span(text: str, *, field_name: str) -> float:
    """'90s', '15m', '24h', '7d', '2w' → seconds."""
    m = _SPAN.match(text.strip().lower())
    if not m:
        raise InvalidRequest(f"{field_name}={text!r}: write a span like 15m, 24h or 7d",
                             field=field_name, value=text)
    seconds = float(m[1]) * _UNIT_S[m[2]]
    if seconds > MAX_SPAN_S:  # further back than any date: `now - span` would overflow
        raise InvalidRequest(f"{field_name}={text[:40]!r}: at most 100 years back", field=field_name,
                             value=text[:40])
    return seconds


def parse_since(text: str | None, *, default: str = "7d", now: datetime | None = None) -> datetime:
    """A window's start: a span back from now ('7d') or an ISO datetime (UTC when it names no zone)."""
    now = now or utcnow()
    text = (text or default).strip()
    if _SPAN.match(text.lower()):
        return now - timedelta(seconds=parse_span(text, field_name="since"))
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"since={text!r}: write a span like 7d or an ISO datetime",
                             field="since", value=text) from None
    return t if t.tzinfo else t.replace(tzinfo=now.tzinfo)


@dataclass
class WindowPeak:
    """One device's readings in a window: how many, the first one's time, the highest."""

    readings: int
    first: datetime
    peak: float


def window_peaks(session: Session, device_ids: set[str], since: datetime, until: datetime) -> dict[str, WindowPeak]:
    """Raw and minute readings of these devices in [since, until] (the two never overlap in time), summarised.

    Summed up in the database: shipping an idle window's raw readings (360 a device at 5 s) to
    Python for a maximum cost /usage and every /metrics scrape hundreds of milliseconds.
    """
    if not device_ids:
        return {}
    rows = session.execute(
        select(DeviceSample.device_id, func.count(), func.min(DeviceSample.t), func.max(DeviceSample.utilization_pct))
        .where(DeviceSample.device_id.in_(device_ids), DeviceSample.t >= since, DeviceSample.t <= until,
               DeviceSample.utilization_pct.is_not(None))
        .group_by(DeviceSample.device_id))
    return {d: WindowPeak(n, first, float(peak or 0.0)) for d, n, first, peak in rows}


def _run_end(now: datetime) -> Any:
    """Where a job's run ends, as SQL: its finish, now while it runs, else its start (no run)."""
    return case((Job.finished_at.is_not(None), Job.finished_at),
                (Job.status == JobStatus.running, literal(now, UTCDateTime())), else_=Job.started_at)


def _mean_utilization(session: Session, since: datetime | None, now: datetime) -> Any:
    """A job's device's mean utilisation over its run (clipped to `since`), as SQL.

    A folded job (service.accounting.rollups) whose run lies in the window has its readings' count and sum
    stored: a month of a lab's readings is millions of rows, and averaging them again at each
    read cost seconds. The rest (running, just ended, or cut by `since`) is a correlated avg()
    over the (device_id, t, utilization_pct) index, evaluated only for them.
    """
    start: Any = Job.started_at
    whole_run: Any = Job.utilization_readings.is_not(None)
    if since is not None:
        bound = literal(since, UTCDateTime())
        # SQLite's two-argument max() is its greatest().
        start = func.max(start, bound) if session.get_bind().dialect.name == "sqlite" else func.greatest(start, bound)
        whole_run = and_(whole_run, Job.started_at >= bound)
    live = (select(func.avg(DeviceSample.utilization_pct))
            .where(Job.started_at.is_not(None), DeviceSample.device_id == Job.device_id, DeviceSample.t >= start,
                   DeviceSample.t <= _run_end(now), DeviceSample.utilization_pct.is_not(None))
            .correlate(Job).scalar_subquery())
    stored = Job.utilization_sum / func.nullif(Job.utilization_readings, 0)
    return case((whole_run, stored), else_=live).label("mean_utilization")


@dataclass
class JobUsage:
    job_id: int
    owner: str
    kind: str
    status: str
    device_id: str | None
    device_kind: str | None
    share: float
    device_ids: list[str]  # every device of its last placement, the leader first
    wait_seconds: float | None
    run_seconds: float
    allocated_seconds: float
    used_seconds: float | None
    mean_utilization_pct: float | None
    peak_memory_mb: float | None
    memory_total_mb: int | None
    idle: bool = False


def _job_rows(session: Session, where: Any, since: datetime | None, now: datetime) -> list[Any]:
    """Jobs with their owner, device and mean utilisation over their run within [since, now].

    The columns accounting needs, not whole Job rows: a month is tens of thousands of jobs,
    and building an ORM object (params, result, runtime JSON) for each cost more than the query.
    """
    return list(session.execute(
        select(Job.id, Job.kind, Job.status, Job.device_id, Job.device_ids, Job.gpu_memory_gb, Job.gpus, Job.created_at,
               Job.started_at, Job.finished_at, Job.peak_memory_mb, User.name.label("owner"),
               Device.kind.label("device_kind"), Device.slots, Device.memory_total_mb,
               _mean_utilization(session, since, now))
        .join(User, User.id == Job.owner_id)
        .outerjoin(Device, Device.id == Job.device_id)
        .where(where)
    ))


def devices_of(job: Any) -> list[str]:
    """Every device of the job's last placement, the leader first (a row from before gangs: its one)."""
    return list(job.device_ids or ([job.device_id] if job.device_id else []))


def gang_utilization(session: Session, rows: list[Any], since: datetime | None, now: datetime
                     ) -> dict[int, dict[str, float]]:
    """Gang → each of its devices' mean utilisation over its run (`_job_rows`' is the leader's only).

    One grouped query per gang, through the same (device_id, t) index: gangs are few among jobs.
    """
    out: dict[int, dict[str, float]] = {}
    for job in rows:
        devices = devices_of(job)
        if len(devices) < 2 or job.started_at is None:
            continue
        start = max(job.started_at, since) if since is not None else job.started_at
        end = job.finished_at or (now if job.status == JobStatus.running else job.started_at)
        out[job.id] = {d: float(m) for d, m in session.execute(
            select(DeviceSample.device_id, func.avg(DeviceSample.utilization_pct))
            .where(DeviceSample.device_id.in_(devices), DeviceSample.t >= start, DeviceSample.t <= end,
                   DeviceSample.utilization_pct.is_not(None))
            .group_by(DeviceSample.device_id)) if m is not None}
    return out


def _job_usage(job: Any, since: datetime | None, now: datetime,
               per_device: dict[str, float] | None = None) -> JobUsage:
    share = device_share(device_kind=job.device_kind or DeviceKind.cpu, slots=job.slots or 1,
                         memory_total_mb=job.memory_total_mb, gpu_memory_gb=job.gpu_memory_gb) * job.gpus
    start = job.started_at
    if start is not None and since is not None and start < since:
        start = since  # clip to the window
    end = job.finished_at or (now if job.status == JobStatus.running else job.started_at)
    allocated = allocated_seconds(share=share, started_at=start, finished_at=end, now=now)
    mean = None if job.mean_utilization is None else float(job.mean_utilization)
    if per_device:  # a gang: the mean over all its devices
        mean = sum(per_device.values()) / len(per_device)
    used = allocated * mean / 100 if mean is not None else None
    wait_end = job.started_at or (None if job.status in FINAL_STATUSES else now)
    return JobUsage(
        job_id=job.id, owner=job.owner, kind=job.kind, status=job.status, device_id=job.device_id,
        device_kind=job.device_kind, share=share, device_ids=devices_of(job),
        wait_seconds=(wait_end - job.created_at).total_seconds() if wait_end else None,
        run_seconds=run_seconds(job.started_at, end, now), allocated_seconds=allocated, used_seconds=used,
        mean_utilization_pct=None if mean is None else round(mean, 2), peak_memory_mb=job.peak_memory_mb,
        memory_total_mb=job.memory_total_mb,
    )


def job_usage(session: Session, *, job_id: int, idle_minutes: float, idle_pct: float,
              now: datetime | None = None) -> JobUsage | None:
    """One job's accounting: allocated and used device-seconds, mean utilisation, wait, peak memory."""
    now = now or utcnow()
    rows = _job_rows(session, Job.id == job_id, None, now)
    if not rows:
        return None
    usage = _job_usage(rows[0], None, now, gang_utilization(session, rows, None, now).get(job_id))
    if rows[0].status == JobStatus.running:  # only a running job can be idle
        usage.idle = job_id in {u.job_id for u in idle_jobs(session, idle_minutes=idle_minutes, idle_pct=idle_pct,
                                                            now=now)}
    return usage


def idle_jobs(session: Session, *, idle_minutes: float, idle_pct: float, now: datetime | None = None
              ) -> list[JobUsage]:
    """Running GPU jobs whose devices (all of a gang's) stayed below `idle_pct` % utilisation for the
    last `idle_minutes`.

    A device needs readings that span (most of) the window: a worker that has just started, or
    stopped sampling, flags nothing.
    """
    now = now or utcnow()
    window = timedelta(minutes=idle_minutes)
    since = now - window
    rows = _job_rows(session, and_(Job.status == JobStatus.running, Job.started_at <= since,
                                   Device.kind == DeviceKind.cuda), since, now)
    peaks_of = window_peaks(session, {d for r in rows for d in devices_of(r)}, since, now)
    out = []
    for row in rows:
        peaks = [_peak(peaks_of.get(d), since, window) for d in devices_of(row)]
        if all(p is not None and p < idle_pct for p in peaks):
            usage = _job_usage(row, since, now)
            usage.idle = True
            out.append(usage)
    return out


def _peak(readings: WindowPeak | None, since: datetime, window: timedelta) -> float | None:
    """A device's highest reading in the window; None when its readings do not span the window."""
    if readings is None or readings.readings < 2 or readings.first - since > window / 5:
        return None
    return readings.peak
