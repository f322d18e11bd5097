"""Hundreds of concurrent submits: every one answered, none with a 5xx, on both databases.

Before: each request held two pooled connections (the user lookup's and the route's) from
a pool of 5 + 10, so 16 concurrent submits emptied it and waited 30 s for a 500.
"""

from __future__ import annotations

import time

import httpx

from tests.faults.conftest import add_member, bearer, concurrently, server_errors, statuses
from tests.support.stack import Stack

SUBMITS = 200


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
        for job_id in {r.json()["id"] for r in responses if r.status_code == 201}:
            stack.http.post(f"/jobs/{job_id}/cancel")


def test_concurrent_reads_and_writes_mixed(stack: Stack) -> None:
    """Reads (list, one job, queue) interleaved with submits and cancels: none fails."""
    _, token = add_member(stack, "mixed")
    first = stack.submit("test-echo", {"lines": 0, "steps": 0}, token=token)

    def call(client: httpx.Client, i: int) -> httpx.Response:
        h = bearer(token)
        match i % 4:
            case 0:
                return client.post(f"{stack.url}/jobs", json={"kind": "test-sleep", "params": {"seconds": 30}},
                                   headers=h)
            case 1:
                return client.get(f"{stack.url}/jobs", params={"me": True}, headers=h)
            case 2:
                return client.get(f"{stack.url}/jobs/{first['id']}", headers=h)
            case _:
                return client.get(f"{stack.url}/queue", headers=h)

    responses = concurrently(120, call)
    try:
        assert server_errors(responses) == []
        assert set(statuses(responses)) <= {200, 201}, statuses(responses)
    finally:
        for r in responses:
            if r.status_code == 201:
                stack.http.post(f"/jobs/{r.json()['id']}/cancel")
