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
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from service.settings import Settings

BUSY_TIMEOUT_MS = 30_000


def _sqlite_engine(url: str, echo: bool, pooled: bool) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, echo=echo, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        **({} if pooled else {"poolclass": NullPool}),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # We emit BEGIN ourselves (below) so that write sessions can ask for IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
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


def make_engine(settings: Settings, *, pooled: bool = True) -> Engine:
    """An engine for the configured database, with the pragmas and pool it needs."""
    if settings.is_sqlite:
        return _sqlite_engine(settings.database_url, settings.sql_echo, pooled)
    if not pooled:
        return create_engine(settings.database_url, echo=settings.sql_echo, poolclass=NullPool)
    return create_engine(
        settings.database_url,
        echo=settings.sql_echo,
        pool_size=5,
        max_overflow=10,
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
    def from_settings(cls, settings: Settings, *, pooled: bool = True) -> Database:
        """The database of this process; `pooled=False` keeps no connection open between uses
        (the worker parent: a child must never inherit an open SQLite connection)."""
        engine = make_engine(settings, pooled=pooled)
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
