"""The dashboard: one static page at `/` and its files under `/dashboard/`, no CDN, no build step.

The page holds no data: it logs in with a token (kept in the browser's localStorage) and
calls the same API as the CLI.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[2] / "dashboard"

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    # Browsers ask for /favicon.ico before they read the page's <link rel="icon">.
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


def install(app: FastAPI) -> None:
    """Serve the page at `/` and its scripts and styles under `/dashboard/`."""
    app.include_router(router)
    app.mount("/dashboard", StaticFiles(directory=STATIC), name="dashboard")
