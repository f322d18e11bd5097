"""/healthz (the process answers) and /readyz (its database and Redis answer, and which
devices are online to take jobs)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import State, in_db_thread
from service.api.routing import Route
from service.schemas import Health
from service.store import devices as device_store

router = APIRouter(tags=["health"], route_class=Route)


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, summary="Readiness: database and Redis; devices online",
            responses={503: {"model": Health}})
async def readyz(state: State) -> JSONResponse:
    """503 when the database or Redis does not answer. `devices_online` lists the devices that
    take jobs now; an empty list is no 503, since a submit for a known device still queues."""
    checks: dict[str, str] = {}
    online: list[str] = []

    def database() -> None:
        with state.db.reading() as session:
            online.extend(device_store.online_device_ids(session=session))

    def broker() -> None:
        state.publisher.client.ping()

    for name, check in (("database", database), ("redis", broker)):
        try:
            await in_db_thread(state, check)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks,
                  devices_online=online if checks["database"] == "ok" else None)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503,
                        headers={} if ok else {"Retry-After": "5"})
