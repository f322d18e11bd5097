"""The real services the tests use: PostgreSQL, Redis, and fresh databases on them.

Without PostgreSQL or Redis, the tests that need them skip with the reason; with CI=true
(or GPULAB_TEST_REQUIRE_SERVICES=1) they fail instead, so CI always runs them.
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis

PG_ADMIN_URL = os.environ.get("GPULAB_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE_URL = os.environ.get("GPULAB_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REQUIRE = os.environ.get("CI", "").lower() == "true" or os.environ.get("GPULAB_TEST_REQUIRE_SERVICES") == "1"


def unavailable(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"{what} is unavailable, and CI requires it", pytrace=False)
    pytest.skip(f"{what} is unavailable")


def redis_url(db: int) -> str:
    try:
        redis.Redis.from_url(f"{REDIS_BASE_URL}/{db}", socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_BASE_URL} ({exc})")
    client = redis.Redis.from_url(f"{REDIS_BASE_URL}/{db}")
    client.flushdb()
    return f"{REDIS_BASE_URL}/{db}"


def create_pg_database() -> tuple[str, str]:
    """A fresh, empty PostgreSQL database: (SQLAlchemy URL, name)."""
    import psycopg

    name = f"gpulab_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} ({exc})")
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}", name


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
