"""What routes depend on: the app's state, a database session, the authenticated user."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from celery import Celery
from fastapi import Depends, Path, Request
from fastapi.concurrency import contextmanager_in_threadpool
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.db import MAX_INTEGER, Database
from service.errors import Forbidden, Unauthorized
from service.live import Publisher
from service.models import User
from service.security import hash_token
from service.settings import Settings
from service.store.users import authenticate, authenticate_hash

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A larger id is refused here (422), never sent to the database (see MAX_INTEGER).
MAX_ID = MAX_INTEGER


T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    db: Database
    publisher: Publisher
    celery: Celery  # sends the jobs a submit starts at once (service/scheduling/starting.py)
    # Requests admitted to the database at once: no more than the pool has connections.
    # Without it, requests that finished their route kept their connection while waiting for
    # a thread to validate the response, while every thread waited for a connection: under
    # 120 concurrent requests the pool timed out and answered 503 (see docs/design.md).
    gate: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.gate = asyncio.Semaphore(self.settings.db_pool_size)


async def in_db_thread(state: AppState, fn: Callable[..., T], *args: object) -> T:
    """Run `fn` (which opens its own session) in a thread, once the database admits it."""
    async with state.gate:
        return await run_in_threadpool(fn, *args)


def get_state(request: Request) -> AppState:
    return request.app.state.gpulab


State = Annotated[AppState, Depends(get_state)]


async def request_session(request: Request, state: State) -> AsyncIterator[Session]:
    """The one session of this request, shared by the user lookup and the route.

    Two sessions per request (one to authenticate, one for the route) held two pooled
    connections at once: 16 concurrent submits emptied a pool of 15 and froze for 30 s.
    A write method gets a write session (BEGIN IMMEDIATE on SQLite), a read method a read one.
    The request holds a place at the database gate until its session is closed.
    """
    factory = state.db.reading if request.method in SAFE_METHODS else state.db.writing
    async with state.gate, contextmanager_in_threadpool(factory()) as session:
        yield session


ReadSession = Annotated[Session, Depends(request_session)]
WriteSession = Annotated[Session, Depends(request_session)]
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="a job's id")]


def unauthorized(detail: str) -> Unauthorized:
    """A 401 that names the header but never echoes any part of it."""
    return Unauthorized(detail, field="Authorization", value=None)


def bearer_token(request: Request) -> str:
    """The token of `Authorization: Bearer <token>` (tokens never travel in URLs: logs keep URLs)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    return token.strip()


def current_user(request: Request, session: ReadSession) -> User:
    token = bearer_token(request)
    user = authenticate(session=session, token=token)
    if user is None:
        raise unauthorized("the bearer token is unknown or revoked: ask an admin for a new one")
    # End the lookup's transaction now: the route starts its own on the same connection,
    # and on SQLite a write route then takes its IMMEDIATE lock only for its own work.
    session.commit()
    # A live stream re-checks this hash, so revoking the token ends the stream.
    request.state.token_hash = hash_token(token)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def current_user_brief(request: Request, state: State) -> User:
    """The authenticated user, looked up in a session of its own that is closed at once: for
    async routes that then wait long (an upload) without holding a place at the database gate."""
    def lookup() -> User:
        with state.db.reading() as session:
            return current_user(request, session)

    return await in_db_thread(state, lookup)


BriefUser = Annotated[User, Depends(current_user_brief)]


def user_by_token_hash(session: Session, token_hash: str) -> User:
    """The user of a token known by its hash (a stream ticket carries the hash, not the token)."""
    user = authenticate_hash(session=session, token_hash=token_hash)
    if user is None:
        raise unauthorized("the token this ticket was issued for is revoked: sign in again")
    return user


def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden(f"{user.name} is not an admin", field="user", value=user.name)
    return user


AdminUser = Annotated[User, Depends(admin_user)]
