"""/users: who am I; admins list and add members."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import AdminUser, CurrentUser, ReadSession, WriteSession
from service.schemas import UserPublic
from service.store import users as user_store

router = APIRouter(tags=["users"])


class UserCreate(BaseModel):
    name: str = Field(max_length=64)
    is_admin: bool = False


class UserCreated(UserPublic):
    token: str


@router.get("/me", response_model=UserPublic, summary="The user this token belongs to")
def me(user: CurrentUser) -> UserPublic:
    return UserPublic(id=user.id, name=user.name, is_admin=user.is_admin)


@router.get("/users", response_model=list[UserPublic], summary="Every user (admin)")
def list_users(user: AdminUser, session: ReadSession) -> list[UserPublic]:
    return [UserPublic(id=u.id, name=u.name, is_admin=u.is_admin) for u in user_store.list_users(session=session)]


@router.post("/users", response_model=UserCreated, status_code=201,
             summary="Add a user (admin); the token is shown once")
def add_user(body: UserCreate, user: AdminUser, session: WriteSession) -> UserCreated:
    new, token = user_store.create_user(session=session, name=body.name, is_admin=body.is_admin)
    return UserCreated(id=new.id, name=new.name, is_admin=new.is_admin, token=token)
