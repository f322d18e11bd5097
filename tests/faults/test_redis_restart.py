"""Redis restarted under load: every job completes, none runs twice, no manual step.

The stack runs as `gpulab up` runs it (a supervisor that restarts a part that exits), on a
Redis of this test's own that keeps nothing across a restart (`shutdown nosave`), so the
queued messages are lost with it, as in the field.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.stack import Stack, free_port


class PrivateRedis:
    """A redis-server on a free port that the test may stop and start again."""

    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed", pytrace=False)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--logfile", str(self.dir / "redis.log")])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_connect_timeout=1).ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
        raise AssertionError("the private redis-server did not answer")

    def stop(self) -> None:
        """`shutdown nosave`: whatever Redis held is gone."""
        if self.proc is None:
            return
        with contextlib.suppress(redis.ConnectionError):  # it answers by closing the connection
            redis.Redis.from_url(self.url).shutdown(nosave=True)
        self.proc.wait(15)
        self.proc = None


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
        stack.stop()
        box.stop()


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
