"""/users: who am I; admins list and add members."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import AdminUser, CurrentUser, ReadSession, WriteSession
from service.api.problems import problem_responses
from service.api.routing import Route
from service.schemas import UserPublic
from service.store import users as user_store

router = APIRouter(tags=["users"], route_class=Route)


class UserCreate(BaseModel):
    name: str = Field(max_length=64)
    is_admin: bool = False
    unix_user: str | None = Field(None, max_length=32, description="Unix account for their command jobs")


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unix_user: str | None = Field(..., max_length=32, description="Unix account; null: the default account")


class UserCreated(UserPublic):
    token: str


@router.get("/me", response_model=UserPublic, summary="The user this token belongs to")
async def me(user: CurrentUser) -> UserPublic:
    return UserPublic(id=user.id, name=user.name, is_admin=user.is_admin, unix_user=user.unix_user)


@router.get("/users", response_model=list[UserPublic], summary="Every user (admin)")
def list_users(user: AdminUser, session: ReadSession) -> list[UserPublic]:
    return [UserPublic(id=u.id, name=u.name, is_admin=u.is_admin, unix_user=u.unix_user)
            for u in user_store.list_users(session=session)]


@router.post("/users", response_model=UserCreated, status_code=201, responses=problem_responses(409),
             summary="Add a user (admin); the token is shown once")
def add_user(body: UserCreate, user: AdminUser, session: WriteSession) -> UserCreated:
    new, token = user_store.create_user(session=session, name=body.name, is_admin=body.is_admin,
                                        unix_user=body.unix_user)
    return UserCreated(id=new.id, name=new.name, is_admin=new.is_admin, unix_user=new.unix_user, token=token)


@router.patch("/users/{name}", response_model=UserPublic, summary="Change a user's Unix account (admin)")
def update_user(name: str, body: UserUpdate, user: AdminUser, session: WriteSession) -> UserPublic:
    changed = user_store.set_unix_user(session=session, name=name, unix_user=body.unix_user)
    return UserPublic(id=changed.id, name=changed.name, is_admin=changed.is_admin, unix_user=changed.unix_user)
