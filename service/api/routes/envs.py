"""/envs: the Python environments command jobs may pick (admins register them)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import AdminUser, CurrentUser, ReadSession, WriteSession
from service.api.routing import Route
from service.models import PythonEnv
from service.schemas import PythonEnvPublic
from service.store import envs as env_store

router = APIRouter(prefix="/envs", tags=["envs"], route_class=Route)


class PythonEnvCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(max_length=1024, description="the prefix holding bin/python (a venv or conda env)")


def env_public(env: PythonEnv) -> PythonEnvPublic:
    return PythonEnvPublic(name=env.name, path=env.path, created_at=env.created_at)


@router.get("", response_model=list[PythonEnvPublic], summary="Registered Python environments")
def list_envs(user: CurrentUser, session: ReadSession) -> list[PythonEnvPublic]:
    return [env_public(e) for e in env_store.list_envs(session=session)]


@router.put("/{name}", response_model=PythonEnvPublic, summary="Register or move an environment (admin)")
def put_env(name: str, body: PythonEnvCreate, user: AdminUser, session: WriteSession) -> PythonEnvPublic:
    return env_public(env_store.add_env(session=session, name=name, path=body.path))


@router.delete("/{name}", status_code=204, response_class=Response, summary="Remove an environment (admin)")
def delete_env(name: str, user: AdminUser, session: WriteSession) -> Response:
    env_store.remove_env(session=session, name=name)
    return Response(status_code=204)
