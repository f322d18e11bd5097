"""The per-member pending limit under concurrency, on both databases, and Idempotency-Key replays.

Before: on PostgreSQL 50 concurrent submits against a limit of 5 accepted 5–9 (each counted
before any other had committed) and 36–40 got 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import add_member, bearer, concurrently, own_stack, server_errors, statuses
from tests.support.stack import Stack

LIMIT = 5
RACERS = 50


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp(f"limits-race-{request.param}")
    with own_stack(request.param, tmp, env={"GPULAB_MEMBER_MAX_PENDING_JOBS": str(LIMIT)}) as stack:
        # A drained device takes no jobs: everything submitted stays pending, so the count is exact.
        stack.api("POST", "/devices/testhost/cpu/drain")
        yield stack


def test_50_concurrent_submits_against_a_limit_of_5(limited: Stack) -> None:
    _, token = add_member(limited, "racer")

    def submit(client: httpx.Client, i: int) -> httpx.Response:
        return client.post(f"{limited.url}/jobs", json={"kind": "test-echo", "params": {"message": f"r{i}"}},
                           headers=bearer(token))

    responses = concurrently(RACERS, submit)
    assert server_errors(responses) == []
    assert statuses(responses) == {201: LIMIT, 429: RACERS - LIMIT}, statuses(responses)
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "limit_exceeded" and refused.json()["value"] == LIMIT
    pending = limited.api("GET", "/jobs", params={"me": True, "status": "pending"}, token=token)["items"]
    assert len(pending) == LIMIT


def test_a_retry_at_the_limit_gets_its_job_back(limited: Stack) -> None:
    _, token = add_member(limited, "retrier")
    body = {"kind": "test-echo", "params": {"message": "keyed"}}
    keyed = limited.http.post("/jobs", json=body, headers={**bearer(token), "Idempotency-Key": "k-1"})
    assert keyed.status_code == 201
    for i in range(LIMIT - 1):
        limited.submit("test-echo", {"message": f"fill {i}"}, token=token)
    over = limited.http.post("/jobs", json={"kind": "test-echo"}, headers=bearer(token))
    assert over.status_code == 429, over.text
    # The member is at the limit; the retry of an accepted submit is that job, not a refusal.
    again = limited.http.post("/jobs", json=body, headers={**bearer(token), "Idempotency-Key": "k-1"})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == keyed.json()["id"]


def test_concurrent_retries_of_one_key_make_one_job(limited: Stack) -> None:
    _, token = add_member(limited, "twin")
    body = {"kind": "test-echo", "params": {"message": "twin"}}

    def submit(client: httpx.Client, i: int) -> httpx.Response:
        return client.post(f"{limited.url}/jobs", json=body, headers={**bearer(token), "Idempotency-Key": "twin"})

    responses = concurrently(20, submit)
    assert server_errors(responses) == []
    assert statuses(responses) == {201: 1, 200: 19}, statuses(responses)
    assert len({r.json()["id"] for r in responses}) == 1


@pytest.mark.parametrize("change", [{"priority": -5}, {"timeout_s": 99}, {"seed": 7}, {"max_attempts": 1},
                                    {"device": "testhost/cpu"}, {"params": {"message": "other"}}])
def test_a_replay_with_any_field_changed_is_a_conflict(limited: Stack, change: dict) -> None:
    _, token = add_member(limited, "replayer")
    body = {"kind": "test-echo", "params": {"message": "first"}, "seed": 3, "device": "cpu"}
    key = f"replay-{next(iter(change))}"
    first = limited.http.post("/jobs", json=body, headers={**bearer(token), "Idempotency-Key": key})
    assert first.status_code == 201, first.text
    same = limited.http.post("/jobs", json=body, headers={**bearer(token), "Idempotency-Key": key})
    assert (same.status_code, same.json()["id"]) == (200, first.json()["id"])
    changed = limited.http.post("/jobs", json={**body, **change}, headers={**bearer(token), "Idempotency-Key": key})
    assert changed.status_code == 409, changed.text
    problem = changed.json()
    assert problem["code"] == "idempotency_conflict" and problem["job_id"] == first.json()["id"]
    assert problem["field"] == "Idempotency-Key"
