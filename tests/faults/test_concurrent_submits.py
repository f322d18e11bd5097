"""Hundreds of concurrent submits: every one answered, none with a 5xx, on both databases.

Before: each request held two pooled connections (the user lookup's and the route's) from
a pool of 5 + 10, so 16 concurrent submits emptied it and waited 30 s for a 500.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import add_member, bearer, cancel_and_wait, concurrently, own_stack, server_errors, statuses
from tests.support.stack import Stack

SUBMITS = 200
SMALL_POOL = 3


def test_200_concurrent_submits_all_succeed(stack: Stack) -> None:
    _, token = add_member(stack, "crowd")
    url = f"{stack.url}/jobs"

    def submit(client: httpx.Client, i: int) -> httpx.Response:
        return client.post(url, json={"kind": "test-echo", "params": {"lines": 0, "steps": 0}},
                           headers={**bearer(token), "Idempotency-Key": f"crowd-{i}"})

    started = time.monotonic()
    responses = concurrently(SUBMITS, submit)
    elapsed = time.monotonic() - started
    try:
        assert server_errors(responses) == []
        assert statuses(responses) == {201: SUBMITS}, statuses(responses)
        ids = {r.json()["id"] for r in responses}
        assert len(ids) == SUBMITS
        # The API still answers at once afterwards: nothing is left holding connections.
        assert stack.api("GET", "/jobs", params={"limit": 1}, token=token)["items"]
        print(f"{SUBMITS} concurrent submits answered in {elapsed:.1f} s")
    finally:
        cancel_and_wait(stack, responses)


def mixed_requests(stack: Stack, n: int) -> None:
    """`n` concurrent submits, job lists, one job, its events and the queue: none fails."""
    _, token = add_member(stack, "mixed")
    first = stack.submit("test-echo", {"lines": 2, "steps": 0}, token=token)
    h = bearer(token)

    def call(client: httpx.Client, i: int) -> httpx.Response:
        match i % 5:
            case 0:
                return client.post(f"{stack.url}/jobs", json={"kind": "test-sleep", "params": {"seconds": 30}},
                                   headers=h)
            case 1:
                return client.get(f"{stack.url}/jobs", params={"me": True}, headers=h)
            case 2:
                return client.get(f"{stack.url}/jobs/{first['id']}", headers=h)
            case 3:
                return client.get(f"{stack.url}/jobs/{first['id']}/events", headers=h)
            case _:
                return client.get(f"{stack.url}/queue", headers=h)

    responses = concurrently(n, call)
    try:
        assert server_errors(responses) == []
        assert set(statuses(responses)) <= {200, 201}, statuses(responses)
    finally:
        cancel_and_wait(stack, responses)


def test_concurrent_reads_and_writes_mixed(stack: Stack) -> None:
    mixed_requests(stack, 120)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def small_pool_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp(f"pool-{request.param}")
    with own_stack(request.param, tmp, env={"GPULAB_DB_POOL_SIZE": str(SMALL_POOL)}) as stack:
        yield stack


def test_more_requests_than_connections_all_answered(small_pool_stack: Stack) -> None:
    """Before: a request whose route had finished kept its connection while it waited for a
    thread to validate its response, while every thread waited for a connection; with 120
    concurrent requests on PostgreSQL the pool timed out after 10 s and some got 503. A pool of
    3 makes the same race certain: 90 concurrent requests always emptied it."""
    mixed_requests(small_pool_stack, 90)
