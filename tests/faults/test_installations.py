"""Two gpulab installations on one Redis database never take each other's messages.

Both have a device called testhost/cpu and number their jobs from 1: without the
installation id in queue and channel names, each worker would take the other's jobs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import next_redis_url
from tests.support.stack import Stack, finish_stopping


@pytest.fixture
def two_stacks(tmp_path: Path) -> Iterator[tuple[Stack, Stack]]:
    # Redis channels span its database numbers: a stack still stopping would be heard here.
    finish_stopping(block=True)
    url = next_redis_url()
    stacks = [Stack(database_url=f"sqlite:///{tmp_path / name / 'gpulab.sqlite3'}", redis_url=url,
                    state_dir=tmp_path / name) for name in ("a", "b")]
    try:
        for stack in stacks:
            stack.launch()
        yield stacks[0].wait_started(), stacks[1].wait_started()
    finally:
        for stack in stacks:
            stack.stop()


def test_two_installations_on_one_redis_database_run_only_their_own_jobs(two_stacks: tuple[Stack, Stack]) -> None:
    a, b = two_stacks
    ids = {a.installation, b.installation}
    assert len(ids) == 2
    listener = redis.Redis.from_url(a.env["GPULAB_REDIS_URL"]).pubsub(ignore_subscribe_messages=True)
    listener.psubscribe("gpulab:*")
    jobs = {stack: [stack.submit("test-echo", {"message": f"{name}{i}", "lines": 1})["id"] for i in range(8)]
            for stack, name in ((a, "a"), (b, "b"))}
    for stack, name in ((a, "a"), (b, "b")):
        for i, job_id in enumerate(jobs[stack]):
            done = stack.wait_for(job_id, timeout=60)
            assert (done["status"], done["runs"], done["result"]["message"]) == ("succeeded", 1, f"{name}{i}")
    for stack in (a, b):
        assert "claim refused" not in (stack.logs / "worker-testhost_cpu.log").read_text()
    channels = set()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        message = listener.get_message(timeout=0.2)
        if message is not None:
            channels.add(message["channel"].decode())
    listener.close()
    assert channels, "no live event was published"
    # Channels span Redis's database numbers, so the stacks of another xdist worker are heard
    # too: every channel names an installation, and both of these published on their own.
    named = {c.split(":")[1] for c in channels}
    assert all(re.fullmatch(r"[0-9a-f]{12}", n) for n in named), channels
    assert ids <= named, (ids, channels)
