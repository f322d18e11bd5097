"""/workers: each live worker, its device, its heartbeat's age and what it runs."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import CurrentUser, ReadSession
from service.api.routing import Route
from service.models import utcnow
from service.schemas import WorkerPublic
from service.store import devices as device_store

router = APIRouter(prefix="/workers", tags=["devices"], route_class=Route)


@router.get("", response_model=list[WorkerPublic], summary="Live workers and what they run")
def list_workers(user: CurrentUser, session: ReadSession, stopped: bool = False) -> list[WorkerPublic]:
    now = utcnow()
    return [
        WorkerPublic(id=w.id, device_id=w.device_id, host=w.host, pid=w.pid, slots=w.slots, started_at=w.started_at,
                     last_heartbeat_at=w.last_heartbeat_at,
                     heartbeat_age_s=(now - w.last_heartbeat_at).total_seconds(),
                     running_job_ids=[int(j) for j in w.running_job_ids or []])
        for w in device_store.list_workers(session=session, live_only=not stopped)
    ]
