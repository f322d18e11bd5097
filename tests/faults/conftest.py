"""Helpers of the fault tests: stacks of their own (with settings a test needs), members, and
many concurrent requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import next_redis_url
from tests.support import services
from tests.support.stack import Stack, free_port


@contextmanager
def own_stack(kind: str, tmp: Path, env: dict[str, str] | None = None,
              workers: tuple[str, ...] = ("cpu",), database_url: str | None = None) -> Iterator[Stack]:
    """A stack of the test's own on `kind` ("sqlite" or "postgres"), with extra settings."""
    name = None
    if database_url is None:
        database_url, name = services.migrated_database(kind, tmp)
    stack = Stack(database_url=database_url, redis_url=next_redis_url(), state_dir=tmp, env=env)
    try:
        yield stack.start(workers=workers)
    finally:
        stack.stop(after=(lambda: services.drop_pg_database(name)) if name else None)


def add_member(stack: Stack, prefix: str = "member") -> tuple[str, str]:
    """A new member: (name, token)."""
    name = f"{prefix}{free_port()}"
    return name, stack.api("POST", "/users", json={"name": name})["token"]


def concurrently(n: int, call: Callable[[httpx.Client, int], httpx.Response], *,
                 timeout: float = 120) -> list[httpx.Response]:
    """`n` requests at once, each on its own connection (a thread per request)."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    with httpx.Client(limits=limits, timeout=timeout) as client, ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: call(client, i), range(n)))


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    """How many responses had each status."""
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


def server_errors(responses: list[httpx.Response]) -> list[tuple[int, str]]:
    return [(r.status_code, r.text[:300]) for r in responses if r.status_code >= 500]


def bearer(token: str) -> dict[str, Any]:
    return {"Authorization": f"Bearer {token}"}


def cancel_and_wait(stack: Stack, responses: list[httpx.Response]) -> None:
    """Cancel the jobs these submits made and wait until each has ended: the session's shared
    stack is left idle for the next test (one that expects its submit to find the device free)."""
    ids = [r.json()["id"] for r in responses if r.status_code == 201]
    for job_id in ids:
        stack.http.post(f"/jobs/{job_id}/cancel")
    for job_id in ids:
        stack.wait_for(job_id)

