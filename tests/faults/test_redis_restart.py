"""Redis restarted under load: every job completes, none runs twice, no manual step.

The stack runs as `gpulab up` runs it (a supervisor that restarts a part that exits), on a
Redis of this test's own that keeps nothing across a restart (`shutdown nosave`), so the
queued messages are lost with it, as in the field.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.private_services import PrivateRedis
from tests.support.stack import Stack


@pytest.fixture
def up_stack(tmp_path: Path) -> Iterator[tuple[Stack, PrivateRedis]]:
    box = PrivateRedis(tmp_path)
    box.start()
    stack = Stack(database_url=f"sqlite:///{tmp_path / 'gpulab.sqlite3'}", redis_url=f"{box.url}/0",
                  state_dir=tmp_path / "state",
                  env={"GPULAB_PROBE_S": "1", "GPULAB_PROBE_TIMEOUT_S": "4", "GPULAB_DISPATCH_TIMEOUT_S": "60"})
    try:
        yield stack.start_up(), box
    finally:
        stack.stop(after=box.stop)


def _statuses(stack: Stack, ids: list[int]) -> dict[int, dict[str, Any]]:
    wanted = set(ids)
    jobs: dict[int, dict[str, Any]] = {}
    cursor = None
    while True:
        page = stack.api("GET", "/jobs", params={"limit": 500, **({"cursor": cursor} if cursor else {})})
        jobs.update({j["id"]: j for j in page["items"] if j["id"] in wanted})
        cursor = page.get("next_cursor")
        if not cursor:
            return jobs


def test_jobs_pending_and_running_all_complete_once_after_a_redis_restart(
        up_stack: tuple[Stack, PrivateRedis]) -> None:
    stack, box = up_stack
    ids = [stack.submit("test-sleep", {"seconds": 0.3})["id"] for _ in range(100)]
    stack.wait(lambda: Counter(j["status"] for j in _statuses(stack, ids).values())["succeeded"] >= 10,
               90, "ten jobs to succeed")
    box.stop()
    time.sleep(3)  # Redis is away for a while, as in a real restart
    box.start()
    stack.wait(lambda: all(j["status"] in ("succeeded", "failed", "cancelled")
                           for j in _statuses(stack, ids).values()), 240, "every job to end")
    jobs = _statuses(stack, ids)
    assert Counter(j["status"] for j in jobs.values()) == {"succeeded": 100}
    assert [j["id"] for j in jobs.values() if j["runs"] != 1] == []
    # A worker whose consumer died (kombu's failure after a restart under load: seen in every
    # run here) left and was started again by the supervisor, whose device serves again.
    log = (stack.logs / "up.log").read_text()
    if "its consumer receives nothing from its queue" in log:
        assert "worker cpu exited" in log.split("its consumer receives nothing from its queue", 1)[1]
    assert stack._device_online("testhost/cpu")
