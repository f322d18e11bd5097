"""/healthz (the process answers) and /readyz (its database and Redis answer)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from service.api.deps import State
from service.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, summary="Readiness: database and Redis",
            responses={503: {"model": Health}})
async def readyz(state: State) -> JSONResponse:
    checks: dict[str, str] = {}

    def database() -> None:
        with state.db.reading() as session:
            session.execute(text("SELECT 1"))

    def broker() -> None:
        state.publisher.client.ping()

    for name, check in (("database", database), ("redis", broker)):
        try:
            await run_in_threadpool(check)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503,
                        headers={} if ok else {"Retry-After": "5"})
