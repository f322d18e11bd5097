"""What routes depend on: the app's state, a database session, the authenticated user."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import Forbidden, Unauthorized
from service.live import Publisher
from service.models import User
from service.settings import Settings
from service.store.users import authenticate


@dataclass
class AppState:
    settings: Settings
    db: Database
    publisher: Publisher


def get_state(request: Request) -> AppState:
    return request.app.state.gpulab


State = Annotated[AppState, Depends(get_state)]


def read_session(state: State) -> Iterator[Session]:
    with state.db.reading() as session:
        yield session


def write_session(state: State) -> Iterator[Session]:
    with state.db.writing() as session:
        yield session


ReadSession = Annotated[Session, Depends(read_session)]
WriteSession = Annotated[Session, Depends(write_session)]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        # EventSource cannot set headers: the dashboard's live streams pass ?token=.
        token = request.query_params.get("token", "")
        if not token:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'",
                               field="Authorization", value=header[:16] or None)
    return token.strip()


def current_user(request: Request, session: ReadSession) -> User:
    token = _bearer(request)
    user = authenticate(session=session, token=token)
    if user is None:
        raise Unauthorized("the bearer token is unknown or revoked", field="Authorization",
                           value=token[:9] + "…")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden(f"{user.name} is not an admin", field="user", value=user.name)
    return user


AdminUser = Annotated[User, Depends(admin_user)]
