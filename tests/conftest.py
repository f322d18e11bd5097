"""Shared fixtures: real databases (SQLite and PostgreSQL), real Redis, and real stacks."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.db import Database
from service.settings import Settings
from tests.support import services
from tests.support.stack import Stack, finish_stopping

# Redis database numbers for this run's stacks, in an order of its own so parallel runs rarely
# start on the same one. Each is flushed when this run first takes it (an earlier run's leftovers
# go); past its numbers a run shares them without a flush, which is safe because every queue name
# and channel carries the stack's installation id. On xdist workers (GPULAB_TEST_WORKERS) each
# takes every n-th number: one worker flushing a number that another's stack uses would drop that
# stack's queue. Past fifteen workers there are too few to go round, and nobody flushes.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_FLUSH = _WORKERS <= 15
_REDIS_DBS = [db for db in range(1, 16) if (db - 1) % _WORKERS == _WORKER] if _FLUSH else [_WORKER % 15 + 1]
random.Random(os.getpid()).shuffle(_REDIS_DBS)
_redis_taken = itertools.count()


def pytest_sessionfinish() -> None:
    """Wait for the parts of the stacks stopped last (their teardown does not wait)."""
    finish_stopping(block=True)


def next_redis_url() -> str:
    n = next(_redis_taken)
    db = _REDIS_DBS[n % len(_REDIS_DBS)]
    return services.redis_url(db) if _FLUSH and n < len(_REDIS_DBS) else f"{services.redis_base()}/{db}"


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind, never migrated."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gpulab.sqlite3'}"
        return
    url, name = services.create_pg_database()
    yield url
    services.drop_pg_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated database of each kind (a copy of one migrated from empty)."""
    url, name = services.migrated_database(request.param, tmp_path)
    yield url
    if name:
        services.drop_pg_database(name)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, redis_url=f"{services.REDIS_BASE_URL}/0",
                    state_dir=tmp_path, host="testhost")


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database.from_settings(settings)
    yield database
    database.engine.dispose()


def _stack(kind: str, tmp: Path, env: dict[str, str] | None = None) -> Iterator[Stack]:
    url, name = services.migrated_database(kind, tmp)
    stack = Stack(database_url=url, redis_url=next_redis_url(), state_dir=tmp, env=env)
    try:
        yield stack.start()
    finally:
        stack.stop(after=(lambda: services.drop_pg_database(name)) if name else None)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One real stack per database for the whole session: API, dispatcher, one CPU worker."""
    yield from _stack(request.param, tmp_path_factory.mktemp(f"stack-{request.param}"))


@pytest.fixture(scope="module")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of this module's own (on SQLite), for tests that add or kill workers."""
    yield from _stack("sqlite", tmp_path_factory.mktemp("own-stack"))


@pytest.fixture(scope="module")
def postgres_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of this module's own (on PostgreSQL), for tests that add or kill workers."""
    yield from _stack("postgres", tmp_path_factory.mktemp("own-pg-stack"))
