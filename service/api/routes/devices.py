"""/devices: the inventory, what runs where, and draining."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from service.api.deps import AdminUser, CurrentUser, ReadSession, WriteSession
from service.models import Job, JobStatus, User
from service.schemas import DeviceJob, DevicePublic
from service.store import devices as device_store

router = APIRouter(prefix="/devices", tags=["devices"])


def _device_jobs(session: ReadSession) -> dict[str, list[DeviceJob]]:
    rows = session.execute(
        select(Job.id, Job.device_id, Job.kind, Job.status, Job.gpu_memory_gb, User.name)
        .join(User, User.id == Job.owner_id)
        .where(Job.status.in_([JobStatus.dispatched, JobStatus.running]))
        .order_by(Job.id)
    )
    out: dict[str, list[DeviceJob]] = {}
    for r in rows:
        out.setdefault(r.device_id, []).append(
            DeviceJob(id=r.id, owner=r.name, kind=r.kind, status=r.status, gpu_memory_gb=r.gpu_memory_gb))
    return out


def device_public(device, jobs: list[DeviceJob]) -> DevicePublic:  # type: ignore[no-untyped-def]
    data = {c: getattr(device, c) for c in DevicePublic.model_fields if c != "jobs"}
    return DevicePublic(**data, jobs=jobs)


@router.get("", response_model=list[DevicePublic], summary="Every device, its state and its jobs")
def list_devices(user: CurrentUser, session: ReadSession) -> list[DevicePublic]:
    jobs = _device_jobs(session)
    return [device_public(d, jobs.get(d.id, [])) for d in device_store.list_devices(session=session)]


@router.get("/{device_id:path}/info", response_model=DevicePublic, summary="One device")
def get_device(device_id: str, user: CurrentUser, session: ReadSession) -> DevicePublic:
    device = device_store.get_device(session=session, device_id=device_id)
    return device_public(device, _device_jobs(session).get(device.id, []))


@router.post("/{device_id:path}/drain", response_model=DevicePublic, summary="Drain a device (admin)")
def drain(device_id: str, user: AdminUser, session: WriteSession) -> DevicePublic:
    device = device_store.set_draining(session=session, device_id=device_id, draining=True)
    return device_public(device, [])


@router.post("/{device_id:path}/resume", response_model=DevicePublic, summary="Resume a drained device (admin)")
def resume(device_id: str, user: AdminUser, session: WriteSession) -> DevicePublic:
    device = device_store.set_draining(session=session, device_id=device_id, draining=False)
    return device_public(device, [])
