"""/metrics: Prometheus text format, without a token unless GPULAB_METRICS_PUBLIC=false."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import State, current_user_brief, in_db_thread
from service.api.routing import Route
from service.metrics import render_metrics

router = APIRouter(tags=["health"], route_class=Route)


@router.get("/metrics", summary="Prometheus metrics (jobs, queue, devices with DCGM names)",
            response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request, state: State) -> Response:
    if not state.settings.metrics_public:
        # Prometheus sends the token as `authorization: { credentials: ... }` in its scrape config.
        await current_user_brief(request, state)
    body = await in_db_thread(state, render_metrics, state.db, state.settings)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
