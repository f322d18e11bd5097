"""Devices, the worker incarnations that serve them, and their heartbeats."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from service.db import changed
from service.errors import NotFound
from service.live import queue_wake
from service.models import Allocation, Device, DeviceState, Job, JobStatus, User, Worker, utcnow


def register_worker(
    *,
    session: Session,
    worker_id: str,
    device: dict[str, Any],
    pid: int,
    slots: int,
) -> Device:
    """Record a worker start: upsert its device (keeping a drain), mark it online."""
    now = utcnow()
    row = session.get(Device, device["id"], with_for_update=True)
    if row is None:
        row = Device(id=device["id"], created_at=now)
        session.add(row)
        state = DeviceState.online
    else:
        state = DeviceState.draining if row.state == DeviceState.draining else DeviceState.online
    for key in ("host", "kind", "index", "name", "uuid", "memory_total_mb", "runtime"):
        setattr(row, key, device.get(key))
    row.slots, row.state, row.worker_id, row.last_seen_at = slots, state, worker_id, now
    session.add(Worker(id=worker_id, device_id=row.id, host=device["host"], pid=pid, slots=slots,
                       started_at=now, last_heartbeat_at=now, running_job_ids=[]))
    queue_wake(session, "worker")
    session.commit()
    return row


def live_worker(*, session: Session, device_id: str, host: str, timeout_s: float) -> Worker | None:
    """The worker on `host` that serves the device now (not stopped, heard within the timeout), if any."""
    cutoff = utcnow() - timedelta(seconds=timeout_s)
    return session.scalar(
        select(Worker).join(Device, Device.worker_id == Worker.id)
        .where(Device.id == device_id, Worker.host == host, Worker.stopped_at.is_(None),
               Worker.last_heartbeat_at >= cutoff)
    )


def heartbeat(
    *,
    session: Session,
    worker_id: str,
    running_job_ids: list[int],
    probe_ok_at: datetime | None = None,
    stalled: bool = False,
) -> bool:
    """A worker is alive and runs these jobs; False if it was declared lost meanwhile.

    `probe_ok_at` is when its consumer last received a message from its own queue; a
    `stalled` worker (a probe that did not come back) keeps its device out of dispatch.
    """
    now = utcnow()
    values: dict[str, Any] = {"last_heartbeat_at": now, "running_job_ids": running_job_ids}
    if probe_ok_at is not None:
        values["probe_ok_at"] = probe_ok_at
    won = changed(session.execute(
        update(Worker).where(Worker.id == worker_id, Worker.stopped_at.is_(None)).values(**values)
    )) == 1
    if won:
        session.execute(
            update(Device)
            .where(Device.worker_id == worker_id)
            .values(last_seen_at=now)
        )
        # A device marked offline by a missed beat comes back with the next one; a stalled
        # one when its worker receives from its queue again.
        if stalled:
            session.execute(
                update(Device)
                .where(Device.worker_id == worker_id, Device.state.in_([DeviceState.online, DeviceState.offline]))
                .values(state=DeviceState.stalled)
            )
        elif changed(session.execute(
            update(Device)
            .where(Device.worker_id == worker_id, Device.state.in_([DeviceState.offline, DeviceState.stalled]))
            .values(state=DeviceState.online)
        )):
            queue_wake(session, "worker")
    session.commit()
    return won


def stop_worker(*, session: Session, worker_id: str) -> None:
    """A worker shut down cleanly: its device goes offline (a drain is kept)."""
    now = utcnow()
    session.execute(update(Worker).where(Worker.id == worker_id).values(stopped_at=now))
    session.execute(
        update(Device)
        .where(Device.worker_id == worker_id, Device.state.in_([DeviceState.online, DeviceState.stalled]))
        .values(state=DeviceState.offline)
    )
    session.commit()


def find_silent_workers(*, session: Session, timeout_s: float) -> list[Worker]:
    """Workers that have not stopped but whose last heartbeat is older than the timeout."""
    cutoff = utcnow() - timedelta(seconds=timeout_s)
    return list(
        session.scalars(
            select(Worker).where(Worker.stopped_at.is_(None), Worker.last_heartbeat_at < cutoff)
        )
    )


def declare_worker_lost(*, session: Session, worker_id: str) -> list[tuple[int, int]]:
    """Mark a silent worker stopped and its device offline; return the running (job, attempt)s it
    ran, and those of the gangs that held its device.

    A gang runs under its leader's worker, but it lives or dies whole: a lost device is a lost
    rank. A gang dispatched after a new incarnation took the device over is that one's, not lost.
    """
    won = changed(session.execute(
        update(Worker).where(Worker.id == worker_id, Worker.stopped_at.is_(None)).values(stopped_at=utcnow())
    )) == 1
    if not won:
        session.rollback()
        return []
    session.execute(
        update(Device)
        .where(Device.worker_id == worker_id, Device.state.in_([DeviceState.online, DeviceState.stalled]))
        .values(state=DeviceState.offline)
    )
    device_id = session.scalar(select(Worker.device_id).where(Worker.id == worker_id))
    replaced_at = session.scalar(
        select(Worker.started_at).join(Device, Device.worker_id == Worker.id)
        .where(Device.id == device_id, Worker.id != worker_id)
    )
    held = select(Allocation.job_id).where(Allocation.device_id == device_id)
    gangs = and_(Job.id.in_(held), Job.dispatched_at < replaced_at) if replaced_at else Job.id.in_(held)
    jobs = session.execute(
        select(Job.id, Job.attempt).where(Job.status == JobStatus.running, or_(Job.worker_id == worker_id, gangs))
        .order_by(Job.id)
    ).all()
    session.commit()
    return [(j.id, j.attempt) for j in jobs]


def list_devices(*, session: Session) -> list[Device]:
    """Every device ever registered, by id."""
    return list(session.scalars(select(Device).order_by(Device.host, Device.id)))


def jobs_on_devices(*, session: Session) -> dict[str, list[Any]]:
    """device id -> its dispatched and running jobs (id, kind, status, gpu_memory_gb, owner's
    name), by job id; through the allocations, so a gang's job shows on each of its devices."""
    rows = session.execute(
        select(Job.id, Allocation.device_id, Job.kind, Job.status, Job.gpu_memory_gb, User.name.label("owner"))
        .join(Allocation, Allocation.job_id == Job.id)
        .join(User, User.id == Job.owner_id)
        .where(Job.status.in_([JobStatus.dispatched, JobStatus.running]))
        .order_by(Job.id)
    )
    out: dict[str, list[Any]] = {}
    for row in rows:
        out.setdefault(row.device_id, []).append(row)
    return out


def online_device_ids(*, session: Session) -> list[str]:
    """The ids of the devices that take jobs now, in order."""
    return list(session.scalars(select(Device.id).where(Device.state == DeviceState.online).order_by(Device.id)))


def get_device(*, session: Session, device_id: str) -> Device:
    """One device; raises NotFound."""
    device = session.get(Device, device_id)
    if device is None:
        # Submits take `cpu` and `cuda:N`, so an admin types them to drain too: name the ids.
        ids = list(session.scalars(select(Device.id).order_by(Device.id)))
        near = [i for i in ids if i.endswith(f"/{device_id}")]
        hint = f"; did you mean {near[0]!r}?" if len(near) == 1 else ""
        raise NotFound(f"no device has id {device_id!r}{hint} (devices: {', '.join(ids) or 'none registered yet'})",
                       field="device_id", value=device_id)
    return device


def set_draining(*, session: Session, device_id: str, draining: bool) -> Device:
    """Drain a device (running jobs finish, nothing new starts) or resume it."""
    device = get_device(session=session, device_id=device_id)
    if draining:
        device.state = DeviceState.draining
    elif device.state == DeviceState.draining:
        alive = device.worker_id is not None and _worker_alive(session, device.worker_id)
        device.state = DeviceState.online if alive else DeviceState.offline
    queue_wake(session, "drain")
    session.commit()
    return device


def _worker_alive(session: Session, worker_id: str) -> bool:
    return session.scalar(select(Worker.stopped_at.is_(None)).where(Worker.id == worker_id)) or False


def list_workers(*, session: Session, live_only: bool = True) -> list[Worker]:
    """Worker incarnations, the live ones by default."""
    stmt = select(Worker)
    if live_only:
        stmt = stmt.where(Worker.stopped_at.is_(None))
    return list(session.scalars(stmt.order_by(Worker.started_at.desc())))


# What a worker's parent cannot read without CUDA; the job-dependent flags (TF32) stay per job.
CHILD_FACTS = ("cudnn", "nccl", "compute_capability", "torch_threads")


def device_facts(runtime: dict[str, Any]) -> dict[str, Any]:
    """What of a job's runtime completes its device's record (CHILD_FACTS)."""
    return {k: runtime[k] for k in CHILD_FACTS if k in runtime}


def record_device_facts(*, session: Session, device_id: str, facts: dict[str, Any]) -> None:
    """Complete a device's record with what a job's process learned; the caller's finish commits it."""
    device = session.get(Device, device_id)
    if device is not None and any((device.runtime or {}).get(k) != v for k, v in facts.items()):
        device.runtime = {**(device.runtime or {}), **facts}
