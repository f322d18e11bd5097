"""Engines and sessions for SQLite (the embedded default) and PostgreSQL (a lab's).

SQLite runs in WAL mode with a busy timeout. A transaction that reads and then writes must
start with BEGIN IMMEDIATE: a deferred one that upgrades to a write after another process
committed fails at once with "database is locked", whatever the busy timeout. So there are
two session factories: `read` (deferred) and `write` (IMMEDIATE on SQLite; the same on
PostgreSQL, whose row locks and conditional UPDATEs do that work).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from service.settings import Settings

BUSY_TIMEOUT_MS = 30_000
# The API waits less for a lock than the background parts: a request answers 503 with
# Retry-After while a client still listens (the CLI gives up after 30 s), instead of timing out.
API_BUSY_TIMEOUT_MS = 15_000
# Ids and sequence numbers are INTEGER columns: PostgreSQL refuses a larger number as "out of
# range" (and SQLite beyond 64 bits), so inputs are bounded by this before any query.
MAX_INTEGER = 2**31 - 1
# A process opens at most GPULAB_DB_POOL_SIZE connections, keeping up to POOL_KEPT of them
# open when idle. The API admits that many requests to the database at once (deps.AppState.gate),
# each holding one session, so a checkout waits only when the database itself is slow.
POOL_KEPT = 10
POOL_TIMEOUT_S = 10


def _pool(settings: Settings) -> dict[str, Any]:
    kept = min(POOL_KEPT, settings.db_pool_size)
    return {"pool_size": kept, "max_overflow": settings.db_pool_size - kept, "pool_timeout": POOL_TIMEOUT_S}


def _sqlite_engine(url: str, echo: bool, pool: dict[str, Any] | None, busy_ms: int = BUSY_TIMEOUT_MS) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, echo=echo, connect_args={"timeout": busy_ms / 1000, "check_same_thread": False},
        **(pool or {"poolclass": NullPool}),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # We emit BEGIN ourselves (below) so that write sessions can ask for IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def changed(result: Any) -> int:
    """How many rows an UPDATE or DELETE changed: a conditional UPDATE won if this is 1."""
    return cast(CursorResult[Any], result).rowcount


def flush_pending(session: Session) -> None:
    """Flush what the session holds unsaved, as an ORM statement's autoflush would: a Core
    statement on a table (built once, for speed) does not, and must still see those changes."""
    if session.autoflush and (session.new or session.dirty or session.deleted):
        session.flush()


# SQLSTATE classes and codes that mean the server is gone or not accepting connections:
# 08 connection exception, 57P01..03 admin/crash shutdown and "cannot connect now" (a
# restarting server), 53300 too many connections.
_LOST_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
_LOST_SQLITE = ("unable to open database file", "database is locked", "disk i/o error")


def is_connection_lost(exc: BaseException) -> bool:
    """Whether a database error means the database is unreachable (retry later), not a bad query."""
    if isinstance(exc, SQLAlchemyTimeoutError):
        return True  # no pooled connection came free in time: the database is saturated
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return any(sqlstate.startswith(code) for code in _LOST_SQLSTATES)
    module = type(orig).__module__ or ""
    if module.startswith("psycopg"):
        # A psycopg OperationalError without a SQLSTATE never reached the server (refused, reset).
        return isinstance(exc, OperationalError)
    return isinstance(exc, OperationalError) and any(m in str(orig).lower() for m in _LOST_SQLITE)


def make_engine(settings: Settings, *, pooled: bool = True, busy_ms: int = BUSY_TIMEOUT_MS) -> Engine:
    """An engine for the configured database, with the pragmas and pool it needs (`busy_ms`: how
    long SQLite waits for another process's lock)."""
    if settings.is_sqlite:
        return _sqlite_engine(settings.database_url, settings.sql_echo, _pool(settings) if pooled else None,
                              busy_ms)
    # No JIT: PostgreSQL compiles a query whose estimate passes jit_above_cost, and a correlated
    # subquery priced per row of a big table passes it easily; /usage's per-job utilisation took
    # 2.1 s to compile for 0.1 s of running. Our statements are short; none gains from it.
    no_jit = {"options": "-c jit=off"}
    if not pooled:
        return create_engine(settings.database_url, echo=settings.sql_echo, poolclass=NullPool, connect_args=no_jit)
    return create_engine(
        settings.database_url,
        echo=settings.sql_echo,
        connect_args=no_jit,
        **_pool(settings),
        pool_pre_ping=True,
        pool_recycle=1800,
    )


@dataclass
class Database:
    """The engine and the two session factories of one process."""

    engine: Engine
    read: sessionmaker[Session]
    write: sessionmaker[Session]

    @classmethod
    def from_settings(cls, settings: Settings, *, pooled: bool = True, busy_ms: int = BUSY_TIMEOUT_MS) -> Database:
        """The database of this process; `pooled=False` keeps no connection open between uses
        (the worker parent: a child must never inherit an open SQLite connection)."""
        engine = make_engine(settings, pooled=pooled, busy_ms=busy_ms)
        write_engine = engine.execution_options(sqlite_begin="IMMEDIATE")
        return cls(
            engine=engine,
            read=sessionmaker(engine, expire_on_commit=False),
            write=sessionmaker(write_engine, expire_on_commit=False),
        )

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self.read() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A write transaction: committed by the store function, rolled back on error."""
        with self.write() as session:
            yield session

    def dispose(self) -> None:
        """Forget pooled connections (a forked child must not use its parent's)."""
        self.engine.dispose(close=False)
