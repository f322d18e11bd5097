"""More concurrent requests than database connections: they wait their turn, none fails.

Before: a request whose route had finished kept its connection while it waited for a thread
to validate its response, while every thread waited for a connection; with 120 concurrent
requests on PostgreSQL the pool timed out after 10 s and some requests got 503. A pool of 3
makes the same race certain: 90 concurrent requests always emptied it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import add_member, bearer, concurrently, own_stack, server_errors, statuses
from tests.support.stack import Stack

POOL = 3


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def small_pool_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp(f"pool-{request.param}")
    with own_stack(request.param, tmp, env={"GPULAB_DB_POOL_SIZE": str(POOL)}) as stack:
        yield stack


def test_more_requests_than_connections_all_answered(small_pool_stack: Stack) -> None:
    stack = small_pool_stack
    _, token = add_member(stack, "gate")
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

    responses = concurrently(90, call)
    try:
        assert server_errors(responses) == []
        assert set(statuses(responses)) <= {200, 201}, statuses(responses)
    finally:
        for r in responses:
            if r.status_code == 201:
                stack.http.post(f"/jobs/{r.json()['id']}/cancel")
