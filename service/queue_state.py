"""The queue as the dispatcher sees it: pending jobs in start order, devices and their load.

The dispatcher places from this; `/queue` shows the same plan with each job's wait reason,
so what a member reads is what the dispatcher will do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from service.device_request import DeviceRequest, parse_device_request
from service.errors import GpulabError
from service.models import Device, Job, JobStatus
from service.placement import DeviceRoom, Plan, QueuedJob, place


@dataclass
class QueueView:
    jobs: list[Any]  # rows of pending jobs, in start order
    devices: list[DeviceRoom]
    plan: Plan


def _request(text: str) -> DeviceRequest:
    # Stored requests are canonical and host-qualified, so no default host is needed.
    try:
        return parse_device_request(text, default_host="")
    except GpulabError:
        return DeviceRequest(kind="none", device_id="")


def device_rooms(session: Session) -> list[DeviceRoom]:
    """Every device with what its dispatched and running jobs already hold."""
    load = {
        row.device_id: row
        for row in session.execute(
            select(
                Job.device_id,
                func.count(Job.id).label("jobs"),
                func.sum(case((Job.gpu_memory_gb.is_(None), 1), else_=0)).label("exclusive"),
                func.coalesce(func.sum(Job.gpu_memory_gb), 0.0).label("declared_gb"),
            )
            .where(Job.status.in_([JobStatus.dispatched, JobStatus.running]))
            .group_by(Job.device_id)
        )
    }
    rooms = []
    for d in session.scalars(select(Device).order_by(Device.id)):
        row = load.get(d.id)
        rooms.append(
            DeviceRoom(
                id=d.id,
                kind=d.kind,
                name=d.name,
                state=d.state,
                slots=d.slots,
                memory_total_mb=d.memory_total_mb,
                jobs=row.jobs if row else 0,
                exclusive=bool(row and row.exclusive and d.kind == "cuda"),
                declared_mb=float(row.declared_gb) * 1024 if row else 0.0,
            )
        )
    return rooms


def pending_in_order(session: Session) -> list[Any]:
    """Pending jobs in the order they will start: priority, then age."""
    return list(
        session.execute(
            select(Job.id, Job.owner_id, Job.attempt, Job.device_request, Job.gpu_memory_gb,
                   Job.priority, Job.timeout_s, Job.created_at, Job.kind)
            .where(Job.status == JobStatus.pending)
            .order_by(Job.priority.desc(), Job.id)
        )
    )


def plan_queue(session: Session) -> QueueView:
    """Read the queue and devices and compute where each pending job would start now."""
    jobs = pending_in_order(session)
    devices = device_rooms(session)
    queued = [QueuedJob(id=j.id, owner_id=j.owner_id, request=_request(j.device_request),
                        gpu_memory_gb=j.gpu_memory_gb) for j in jobs]
    return QueueView(jobs=jobs, devices=devices, plan=place(queued, devices))
