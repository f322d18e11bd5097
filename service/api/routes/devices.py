"""/devices: the inventory, what runs where, and draining."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.accounting.usage import parse_since, parse_span
from service.api.deps import AdminUser, CurrentUser, ReadSession, WriteSession
from service.api.routing import Route
from service.models import Device, DeviceSample, utcnow
from service.schemas import DeviceJob, DevicePublic, DeviceSamplePoint
from service.store import devices as device_store
from service.store import samples as sample_store

LIVE_FIELDS = ("utilization_pct", "memory_used_mb", "temperature_c", "power_w", "external_mb")

router = APIRouter(prefix="/devices", tags=["devices"], route_class=Route)


def _device_jobs(session: ReadSession) -> dict[str, list[DeviceJob]]:
    return {device_id: [DeviceJob(id=r.id, owner=r.owner, kind=r.kind, status=r.status, gpu_memory_gb=r.gpu_memory_gb)
                        for r in rows]
            for device_id, rows in device_store.jobs_on_devices(session=session).items()}


def device_public(device: Device, jobs: list[DeviceJob], sample: DeviceSample | None = None) -> DevicePublic:
    data = {c: getattr(device, c) for c in DevicePublic.model_fields if hasattr(device, c) and c != "jobs"}
    if sample is not None:
        data.update({f: getattr(sample, f) for f in LIVE_FIELDS}, sampled_at=sample.t)
    return DevicePublic(**data, jobs=jobs)


@router.get("", response_model=list[DevicePublic], summary="Every device, its state, its jobs and latest reading")
def list_devices(user: CurrentUser, session: ReadSession) -> list[DevicePublic]:
    jobs = _device_jobs(session)
    samples = sample_store.latest_samples(session=session)
    return [device_public(d, jobs.get(d.id, []), samples.get(d.id))
            for d in device_store.list_devices(session=session)]


@router.get("/{device_id:path}/info", response_model=DevicePublic, summary="One device")
def get_device(device_id: str, user: CurrentUser, session: ReadSession) -> DevicePublic:
    device = device_store.get_device(session=session, device_id=device_id)
    sample = sample_store.latest_samples(session=session).get(device.id)
    return device_public(device, _device_jobs(session).get(device.id, []), sample)


@router.get("/{device_id:path}/samples", response_model=list[DeviceSamplePoint],
            summary="A device's readings over time, averaged per step")
def device_samples(
    device_id: str,
    user: CurrentUser,
    session: ReadSession,
    since: Annotated[str, Query(description="a span back from now (15m, 24h, 7d) or an ISO datetime")] = "15m",
    step: Annotated[str | None, Query(description="bucket width (10s, 1m); default: about 200 points")] = None,
) -> list[DeviceSamplePoint]:
    device = device_store.get_device(session=session, device_id=device_id)
    now = utcnow()
    start = parse_since(since, now=now)
    step_s = parse_span(step, field_name="step") if step else max(1.0, (now - start).total_seconds() / 200)
    points = sample_store.list_samples(session=session, device_id=device.id, since=start, step_s=max(step_s, 1.0))
    return [DeviceSamplePoint(**p) for p in points]


@router.post("/{device_id:path}/drain", response_model=DevicePublic, summary="Drain a device (admin)")
def drain(device_id: str, user: AdminUser, session: WriteSession) -> DevicePublic:
    device = device_store.set_draining(session=session, device_id=device_id, draining=True)
    return device_public(device, [])


@router.post("/{device_id:path}/resume", response_model=DevicePublic, summary="Resume a drained device (admin)")
def resume(device_id: str, user: AdminUser, session: WriteSession) -> DevicePublic:
    device = device_store.set_draining(session=session, device_id=device_id, draining=False)
    return device_public(device, [])
