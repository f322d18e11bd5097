"""Per-member limits on a stack of their own: over the running limit a job waits, over the pending one it is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import next_redis_url
from tests.support.stack import Stack

LIMITS = {"GPULAB_MEMBER_MAX_RUNNING_JOBS": "1", "GPULAB_MEMBER_MAX_PENDING_JOBS": "2"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("limits-stack")
    stack = Stack(database_url=f"sqlite:///{tmp / 'gpulab.sqlite3'}", redis_url=next_redis_url(), state_dir=tmp,
                  env=LIMITS)
    try:
        stack.start()
        stack.add_worker("cpu", host="hostB")
        yield stack
    finally:
        stack.stop()


def test_running_and_pending_limits_per_member(limited: Stack) -> None:
    carol = limited.gpulab("users", "add", "carol").stdout.strip()
    dave = limited.gpulab("users", "add", "dave").stdout.strip()
    first = limited.submit("test-sleep", {"seconds": 30}, token=carol)["id"]
    limited.wait_for(first, ("running",))
    second = limited.submit("test-sleep", {"seconds": 30}, token=carol)["id"]

    def held_by_limit() -> bool:
        return any(e["job_id"] == second and e["reason"] == "member_limit"
                   for e in limited.api("GET", "/queue")["items"])

    limited.wait(held_by_limit, 10, "carol's second job to wait for her member limit")
    # A free device stays free for her, but another member's job takes it at once.
    other = limited.wait_for(limited.submit("test-echo", {"lines": 0}, token=dave)["id"])
    assert other["status"] == "succeeded"
    assert limited.job(second)["status"] == "pending"

    third = limited.submit("test-echo", {"lines": 0}, token=carol)["id"]  # her second pending job
    problem = limited.api("POST", "/jobs", json={"kind": "test-echo"}, token=carol, expect=429)
    assert (problem["code"], problem["field"], problem["value"]) == ("limit_exceeded", "member_max_pending_jobs", 2)
    assert "member_max_pending_jobs is 2" in problem["detail"]

    limited.api("POST", f"/jobs/{first}/cancel", token=carol)
    assert limited.wait_for(second, ("running",))["status"] == "running"
    assert limited.job(third)["status"] == "pending"  # still one at a time
    limited.api("POST", f"/jobs/{second}/cancel", token=carol)
    assert limited.wait_for(third)["status"] == "succeeded"
