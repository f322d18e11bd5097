"""/job-kinds: what can be submitted, with each kind's parameter schema."""

from __future__ import annotations

from fastapi import APIRouter

from jobs.registry import list_kinds
from service.api.deps import State
from service.api.routing import Route
from service.job_checks import kind_enabled
from service.schemas import JobKindPublic

router = APIRouter(prefix="/job-kinds", tags=["jobs"], route_class=Route)


@router.get("", response_model=list[JobKindPublic], summary="Job kinds and their params' JSON Schema")
def job_kinds(state: State) -> list[JobKindPublic]:
    return [
        JobKindPublic(name=k.name, summary=k.summary, params_schema=k.params.model_json_schema(),
                      enabled=kind_enabled(k.name, state.settings))
        for k in list_kinds()
    ]
