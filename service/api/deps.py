"""What routes depend on: the app's state, a database session, the authenticated user."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

import anyio
from celery import Celery
from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.tokens import TokenCache
from service.db import MAX_INTEGER, Database
from service.errors import Forbidden, Unauthorized
from service.live import Publisher
from service.models import User
from service.security import hash_token
from service.settings import Settings
from service.store.users import authenticate_hash

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY = "gpulab_read_only"  # session.info: a request session of a safe method
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
    tokens: TokenCache = field(init=False)

    def __post_init__(self) -> None:
        self.gate = asyncio.Semaphore(self.settings.db_pool_size)
        self.tokens = TokenCache(self.settings.token_cache_s)


async def in_db_thread(state: AppState, fn: Callable[..., T], *args: object) -> T:
    """Run `fn` (which opens its own session) in a thread, once the database admits it."""
    async with state.gate:
        return await run_in_threadpool(fn, *args)


# The dependencies below are async even where they do no I/O: FastAPI runs a sync dependency
# in a thread, and each hop to a thread and back cost 1–5 ms on the busy 2-core machine.
async def get_state(request: Request) -> AppState:
    return request.app.state.gpulab


State = Annotated[AppState, Depends(get_state)]


async def request_session(request: Request, state: State) -> AsyncIterator[Session]:
    """The one session of this request, shared by the user lookup and the route.

    Two sessions per request (one to authenticate, one for the route) held two pooled
    connections at once: 16 concurrent submits emptied a pool of 15 and froze for 30 s.
    A write method gets a write session (BEGIN IMMEDIATE on SQLite), a read method a read one.
    The request holds a place at the database gate until its session is closed.

    The session is made here, in the event loop: it opens no connection until its first
    statement. Closing one still in a transaction returns its connection (a rollback, I/O)
    and goes to a thread; one that committed, or never touched the database (a request
    answered from the token cache), is closed here without a hop.
    """
    reading = request.method in SAFE_METHODS
    factory = state.db.read if reading else state.db.write
    async with state.gate:
        session = factory()
        session.info[READ_ONLY] = reading
        try:
            yield session
        finally:
            if session.in_transaction():
                with anyio.CancelScope(shield=True):  # a client that leaves still frees the connection
                    await run_in_threadpool(session.close)
            else:
                session.close()


def end_reads(values: Iterable[object]) -> None:
    """End the transaction of a read-only request session among `values`, in this thread (the
    handler's): committed, its loaded objects stay usable, and closing it later needs no hop."""
    for value in values:
        if isinstance(value, Session) and value.info.get(READ_ONLY) and value.in_transaction():
            value.commit()


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


def lookup_user(session: Session, token_hash: str) -> User:
    """The user of a token hash, asked of the database; the lookup's transaction ends here."""
    user = authenticate_hash(session=session, token_hash=token_hash)
    if user is None:
        raise unauthorized("the bearer token is unknown or revoked: ask an admin for a new one")
    # End the lookup's transaction now: the route starts its own on the same connection,
    # and on SQLite a write route then takes its IMMEDIATE lock only for its own work.
    session.commit()
    return user


async def current_user(request: Request, session: ReadSession, state: State) -> User:
    """The token's user: from the token cache (no database, no thread) or else one lookup."""
    token_hash = hash_token(bearer_token(request))
    # A live stream re-checks this hash, so revoking the token ends the stream.
    request.state.token_hash = token_hash
    user = state.tokens.get(token_hash)
    if user is None:
        user = await run_in_threadpool(lookup_user, session, token_hash)
        state.tokens.put(token_hash, user)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def current_user_brief(request: Request, state: State) -> User:
    """The authenticated user, looked up in a session of its own that is closed at once: for
    async routes that then wait long (an upload) without holding a place at the database gate."""
    token_hash = hash_token(bearer_token(request))
    request.state.token_hash = token_hash
    user = state.tokens.get(token_hash)
    if user is None:
        def lookup() -> User:
            with state.db.reading() as session:
                return lookup_user(session, token_hash)

        user = await in_db_thread(state, lookup)
        state.tokens.put(token_hash, user)
    return user


BriefUser = Annotated[User, Depends(current_user_brief)]


def user_by_token_hash(session: Session, token_hash: str) -> User:
    """The user of a token known by its hash (a stream ticket carries the hash, not the token)."""
    user = authenticate_hash(session=session, token_hash=token_hash)
    if user is None:
        raise unauthorized("the token this ticket was issued for is revoked: sign in again")
    return user


async def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden(f"{user.name} is not an admin", field="user", value=user.name)
    return user


AdminUser = Annotated[User, Depends(admin_user)]
