"""The queue as the dispatcher sees it: pending jobs in start order, devices and their load.

The dispatcher places from this; `/queue` shows the same plan with each job's wait reason,
so what a member reads is what the dispatcher will do.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from service.db import flush_pending
from service.models import Allocation, Device, DeviceKind, DeviceSample, Job, JobStatus, utcnow
from service.scheduling.device_request import DeviceRequest
from service.scheduling.fairshare import UsageCache
from service.scheduling.limits import member_limits, member_loads
from service.scheduling.placement import Plan, place, start_key
from service.scheduling.rooms import DeviceRoom, MemberLimits, MemberLoad, QueuedJob
from service.settings import Settings


@dataclass
class QueueView:
    jobs: list[Any]  # rows of pending jobs (`pending_jobs`' columns), in start order
    devices: list[DeviceRoom]
    plan: Plan
    usage: dict[tuple[int, str], float]  # fair-share usage per (member id, device kind)


@dataclass
class QueueOrder:
    """Pending jobs in start order, nothing placed yet: what a plan walks.

    The whole queue for the dispatcher (`order_queue`), or the head of it for a page of /queue
    (`queue_page`): a job's place and wait reason depend only on the jobs ahead of it, since
    placement walks the queue once, front to back.
    """

    jobs: list[Any]  # rows of pending jobs (`PLACEMENT_COLUMNS` first), in start order
    devices: list[DeviceRoom]
    usage: dict[tuple[int, str], float]  # fair-share usage per (member id, device kind)
    limits: MemberLimits
    loads: dict[int, MemberLoad]

    def plan(self) -> Plan:
        """Place the jobs in order; once per order, since placing updates its devices and loads."""
        with cyclic_gc_paused():
            return place(self.queued(), self.devices, limits=self.limits, loads=self.loads)

    def queued(self) -> list[QueuedJob]:
        """The jobs as placement sees them."""
        # Many jobs ask for the same thing: one DeviceRequest per distinct stored request.
        requests: dict[tuple[Any, ...], DeviceRequest] = {}
        queued = []
        # Unpacked by position (/queue's rows carry labels after PLACEMENT_COLUMNS), and the
        # QueuedJob built by position: at 10,000 jobs a pass, a Row's attribute lookups by name
        # cost ~3× and keyword arguments ~1.2×.
        for job_id, owner_id, _, memory, priority, timeout_s, gpus, kind, device_id, model, min_gb, *_ in self.jobs:
            columns = (kind, device_id, model, min_gb)
            request = requests.get(columns)
            if request is None:
                request = requests[columns] = DeviceRequest.from_columns(*columns)
            queued.append(QueuedJob(job_id, owner_id, request, memory, priority,
                                    self.usage.get((owner_id, kind), 0.0), gpus, timeout_s))
        return queued


_SAMPLES = cast(Table, DeviceSample.__table__)
_DEVICES = cast(Table, Device.__table__)
_JOBS = cast(Table, Job.__table__)
_ALLOCATIONS = cast(Table, Allocation.__table__)
# Built once, as Core on the tables: a finish that places the next job reads these every job,
# and building them (and a sample's ORM object) cost more than running them.
# The newest raw reading of each device: one probe of the (device_id, resolution, t) index per
# device, as `store.samples.latest_samples` reads it, but three columns, not objects.
_NEWEST = (select(_SAMPLES.c.id).where(_SAMPLES.c.device_id == _DEVICES.c.id, _SAMPLES.c.resolution == "raw")
           .order_by(_SAMPLES.c.t.desc()).limit(1).correlate(_DEVICES).scalar_subquery())
_EXTERNAL = (select(_SAMPLES.c.device_id, _SAMPLES.c.external_mb, _SAMPLES.c.t)
             .join_from(_SAMPLES, _DEVICES, _SAMPLES.c.id == _NEWEST))
_HELD = (select(_ALLOCATIONS.c.device_id, _JOBS.c.gpu_memory_gb, _JOBS.c.gpus, _JOBS.c.timeout_s,
                _JOBS.c.started_at, _JOBS.c.dispatched_at)
         .join_from(_ALLOCATIONS, _JOBS, _JOBS.c.id == _ALLOCATIONS.c.job_id)
         .where(_JOBS.c.status.in_([JobStatus.dispatched, JobStatus.running])))
# What a plan, and a request's checks (service.job_checks), read of every device: rows, not objects.
DEVICE_ROWS = select(_DEVICES.c.id, _DEVICES.c.host, _DEVICES.c.kind, _DEVICES.c.name, _DEVICES.c.state,
                     _DEVICES.c.slots, _DEVICES.c.memory_total_mb).order_by(_DEVICES.c.id)


def all_devices(session: Session) -> Sequence[Any]:
    """Every registered device, in id order, as rows of DEVICE_ROWS' columns."""
    return session.connection().execute(DEVICE_ROWS).all()


def external_memory_mb(session: Session) -> dict[str, int]:
    """GPU memory (MB) that processes outside gpulab use, per device, from the latest NVML sample.

    The worker's device sampling records it; until a device has a sample this returns
    nothing for it, and placement counts 0 MB there. A reading older than five minutes is
    ignored: its worker is gone or stuck, and the device is offline anyway.
    """
    fresh = utcnow() - timedelta(minutes=5)
    return {device_id: int(external) for device_id, external, t in session.execute(_EXTERNAL)
            if external and t >= fresh}


def device_rooms(session: Session, *, now: datetime | None = None,
                 devices: Sequence[Any] | None = None) -> list[DeviceRoom]:
    """Every device with what its dispatched and running jobs already hold (a gang on each of its devices).

    `devices`: `all_devices`' rows, read earlier in this transaction while nothing else could
    write (a submit on SQLite), else read here.
    """
    now = now or utcnow()
    flush_pending(session)
    rows = session.execute(_HELD).all()
    external = external_memory_mb(session)
    # Core rows, not Device objects: what a room needs is six columns, not a loaded ORM instance.
    if devices is None:
        devices = all_devices(session)
    rooms = {d.id: DeviceRoom(id=d.id, kind=d.kind, name=d.name, state=d.state, slots=d.slots,
                              memory_total_mb=d.memory_total_mb, external_mb=external.get(d.id, 0))
             for d in devices}
    for row in rows:
        room = rooms.get(row.device_id)
        if room is None:
            continue
        room.jobs += 1
        if row.gpus > 1 or (row.gpu_memory_gb is None and room.kind == DeviceKind.cuda):
            room.exclusive = True
        room.declared_mb += (row.gpu_memory_gb or 0.0) * 1024
        # The time limit runs from the start (or, not yet claimed, from the dispatch).
        since = row.started_at or row.dispatched_at or now
        room.ends_in_s = max(room.ends_in_s, (since - now).total_seconds() + row.timeout_s)
    return list(rooms.values())


# What placement reads of a pending job, in the order `QueueOrder.queued` unpacks them.
PLACEMENT_COLUMNS = (Job.id, Job.owner_id, Job.attempt, Job.gpu_memory_gb, Job.priority, Job.timeout_s, Job.gpus,
                     Job.request_kind, Job.request_device_id, Job.request_model, Job.request_min_memory_gb)
_PENDING = select(*PLACEMENT_COLUMNS).where(Job.status == JobStatus.pending).order_by(Job.id)
_OLDEST_PENDING = _PENDING.limit(bindparam("p_limit"))


def pending_jobs(session: Session, *, limit: int | None = None) -> Sequence[Any]:
    """Pending jobs, oldest first, with what placement needs (start order is computed from them);
    the `limit` oldest only, if given.

    Read through the session's connection, not the ORM: the ORM wraps each of 10,000 rows once
    more (measured ~1.7× the read). /queue reads its page in start order instead (`queue_page`).
    """
    # all(): one fetchall; iterating fetches row by row (~5× slower on SQLite)
    if limit is None:
        return session.connection().execute(_PENDING).all()
    return session.connection().execute(_OLDEST_PENDING, {"p_limit": limit}).all()


# One usage cache per database and half-life in this process (the dispatcher's, the API's).
_usage_caches: dict[tuple[str, float], UsageCache] = {}


def usage_cache(settings: Settings) -> UsageCache:
    """This process's fair-share usage cache for the settings' database."""
    key = (settings.database_url, settings.fair_share_half_life_s)
    return _usage_caches.setdefault(key, UsageCache(settings.fair_share_half_life_s))


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Hold off Python's cycle collector for a pass (reference counting still frees everything).

    A pass at 10,000 pending jobs makes some 30,000 young, acyclic objects (rows, queued jobs,
    outlooks) that live until its end; each collection the allocations trigger walks them all
    again, for nothing (measured: place() 88 ms with the collector, 32 ms without, on the bench).
    Process-wide: another thread's pass may turn it back on early, which only costs time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def plan_queue(session: Session, *, settings: Settings, now: datetime | None = None,
               devices: Sequence[Any] | None = None, pending: Sequence[Any] | None = None) -> QueueView:
    """Read the queue, devices, usage and loads; compute where each pending job would start now.

    `devices` (as `device_rooms` takes them) and `pending` (every pending job's row, as
    `pending_jobs` reads them): when the caller read them already in this transaction.
    """
    order = order_queue(session, settings=settings, now=now, devices=devices, pending=pending)
    return QueueView(jobs=order.jobs, devices=order.devices, plan=order.plan(), usage=order.usage)


def order_queue(session: Session, *, settings: Settings, now: datetime | None = None,
                devices: Sequence[Any] | None = None, pending: Sequence[Any] | None = None) -> QueueOrder:
    """Read the queue, devices (unless given: see `plan_queue`), usage and loads, and put the pending
    jobs in start order."""
    with cyclic_gc_paused():
        return _order_queue(session, settings=settings, now=now or utcnow(), devices=devices, pending=pending)


def _order_queue(session: Session, *, settings: Settings, now: datetime,
                 devices: Sequence[Any] | None, pending: Sequence[Any] | None) -> QueueOrder:
    rows = pending_jobs(session) if pending is None else pending
    rooms = device_rooms(session, now=now, devices=devices)
    # Fair-share usage only orders jobs of different members (or device kinds): one job alone
    # (a submit into an empty queue, the common case) or one member's queue of one kind (a
    # member's burst, each finish placing the next) orders by priority and age alone, and
    # reading it was two statements and a third of the plan.
    usage = usage_cache(settings).usage(session=session, now=now) if len({(r[1], r[7]) for r in rows}) > 1 else {}
    # The rows are put in line themselves (QueueOrder.plan makes QueuedJobs of them); usage is
    # keyed by the stored request kind (a StrEnum hashes as its text).
    ordered = sorted(rows, key=lambda r: start_key(r[4], usage.get((r[1], r[7]), 0.0), r[0]))
    limits = member_limits(settings)
    # Members' loads only count against limits: without any, they are not read.
    loads = member_loads(session=session) if limits.max_jobs or limits.max_gpus else {}
    return QueueOrder(jobs=ordered, devices=rooms, usage=usage, limits=limits, loads=loads)
