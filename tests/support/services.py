"""The real services the tests use: PostgreSQL, Redis, and fresh databases on them.

Without PostgreSQL or Redis, the tests that need them skip with the reason; with CI=true
(or GPULAB_TEST_REQUIRE_SERVICES=1) they fail instead, so CI always runs them.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import redis

from cli.local_redis import redis_answers, start_local_redis

PG_ADMIN_URL = os.environ.get("GPULAB_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
# The server only: each stack appends a database number of its own, so a URL given with one
# (redis://host:port/0) would have made every worker's broker URL end in /0/N and fail to start.
REDIS_BASE_URL = re.sub(r"/\d*$", "", os.environ.get("GPULAB_TEST_REDIS_URL", "redis://127.0.0.1:6379"))
REQUIRE = os.environ.get("CI", "").lower() == "true" or os.environ.get("GPULAB_TEST_REQUIRE_SERVICES") == "1"


def unavailable(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"{what} is unavailable, and CI requires it", pytrace=False)
    pytest.skip(f"{what} is unavailable")


_local_redis: list[subprocess.Popen[bytes]] = []


def redis_base() -> str:
    """Redis at GPULAB_TEST_REDIS_URL, or one started for this run when nothing answers there."""
    global REDIS_BASE_URL
    if redis_answers(REDIS_BASE_URL) or _local_redis:
        return REDIS_BASE_URL
    if "GPULAB_TEST_REDIS_URL" in os.environ:
        unavailable(f"Redis at {REDIS_BASE_URL}")
    port = _free_port()
    url = f"redis://127.0.0.1:{port}"
    try:
        _local_redis.append(start_local_redis(url, Path(tempfile.mkdtemp(prefix="gpulab-test-redis-"))))
    except RuntimeError as exc:
        unavailable(f"Redis ({exc})")
    atexit.register(_local_redis[0].terminate)
    REDIS_BASE_URL = url
    return url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_url(db: int) -> str:
    """A flushed Redis database number for one stack."""
    base = redis_base()
    redis.Redis.from_url(f"{base}/{db}").flushdb()
    return f"{base}/{db}"


def create_pg_database(*, template: str | None = None) -> tuple[str, str]:
    """A fresh PostgreSQL database, empty or a copy of `template`: (SQLAlchemy URL, name)."""
    import psycopg

    name = f"gpulab_test_{uuid.uuid4().hex[:10]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} ({exc})")
    return _pg_url(name), name


def _pg_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


# Migrated databases: each run migrates one SQLite file and one PostgreSQL database from empty
# (a real `upgrade`, as `gpulab migrate` runs it) and copies them for every test and stack that
# wants a migrated database: a migration per copy cost ~0.3 CPU-s, 160-odd times a run.
# tests/test_migrations.py and the fault tests of `gpulab migrate` still migrate from empty.
_templates: dict[str, str] = {}


def migrated_database(kind: str, folder: Path) -> tuple[str, str | None]:
    """A migrated database of `kind` ("sqlite": a file in `folder`; "postgres": a scratch
    database to drop with drop_pg_database): (URL, PostgreSQL name or None)."""
    from migrations.migrate import upgrade

    if kind not in _templates:
        if kind == "sqlite":
            path = Path(tempfile.mkdtemp(prefix="gpulab-test-template-")) / "gpulab.sqlite3"
            atexit.register(shutil.rmtree, path.parent, True)
            upgrade(f"sqlite:///{path}")
            _templates[kind] = str(path)
        else:
            url, name = create_pg_database()
            upgrade(url)
            atexit.register(drop_pg_database, name)
            _templates[kind] = name
    if kind == "sqlite":
        path = folder / "gpulab.sqlite3"
        shutil.copyfile(_templates[kind], path)
        url, name = f"sqlite:///{path}", None
    else:
        url, name = create_pg_database(template=_templates[kind])
    _new_installation_id(url)
    return url, name


def _new_installation_id(url: str) -> None:
    """What a migrate from empty does that a copy does not: name a new installation (its Redis
    queues and channels carry the id, and stacks share Redis database numbers)."""
    from sqlalchemy import create_engine, pool, text

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE installation SET id = :id"), {"id": uuid.uuid4().hex[:12]})
    finally:
        engine.dispose()


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
