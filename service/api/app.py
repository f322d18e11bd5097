"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import docs, problems
from service.api.deps import AppState
from service.api.guard import RequestGuard
from service.api.redact import install_redaction
from service.api.routes import (
    bundles,
    dashboard,
    devices,
    envs,
    health,
    job_views,
    jobs,
    kinds,
    metrics,
    queue,
    usage,
    users,
    workers,
)
from service.api.routes import problems as problem_pages
from service.db import API_BUSY_TIMEOUT_MS, Database
from service.live import Publisher
from service.queues import make_celery
from service.settings import Settings, get_settings

DESCRIPTION = """
gpulab runs lab members' training and tensor-experiment jobs on the lab's GPUs.

Authenticate with `Authorization: Bearer <token>` (`gpulab users add NAME` prints one).
Errors are `application/problem+json` with a stable `code`, and `field`/`value` naming
what was wrong; each error's `type` links to its page under [/problems](/problems).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for these settings (read from the environment when not given)."""
    settings = settings or get_settings()
    db = Database.from_settings(settings, busy_ms=API_BUSY_TIMEOUT_MS)
    publisher = Publisher(settings.redis_url)
    publisher.attach(db.read, db.write)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # uvicorn sets up its log handlers after the app is built: mask credentials in them now.
        install_redaction()
        yield

    # /docs and /redoc are served by docs.install from local files, not FastAPI's CDN pages.
    app = FastAPI(title="gpulab", version="0.1.0", description=DESCRIPTION, docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.gpulab = AppState(settings=settings, db=db, publisher=publisher,
                                 celery=make_celery(settings))
    install_redaction()
    app.add_middleware(RequestGuard)
    problems.install(app)
    for module in (jobs, job_views, bundles, envs, kinds, devices, queue, users, health, usage, workers, metrics,
                   problem_pages):
        docs.declare_problems(module.router)
        app.include_router(module.router)
    dashboard.install(app)
    docs.install(app)
    return app
