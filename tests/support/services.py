"""The real services the tests use: PostgreSQL, Redis, and fresh databases on them.

Without PostgreSQL or Redis, the tests that need them skip with the reason; with CI=true
(or GPULAB_TEST_REQUIRE_SERVICES=1) they fail instead, so CI always runs them.
"""

from __future__ import annotations

import atexit
import os
import re
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
