"""Faults: the API restarted under a follower, and Redis gone and back. Nothing accepted is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.local_redis import start_local_redis
from tests.support.stack import Stack, free_port


@pytest.fixture(scope="module")
def own_redis_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict]]:
    """A stack on a Redis of its own, so the test may stop and restart it."""
    tmp = tmp_path_factory.mktemp("resilience")
    port = free_port()
    url = f"redis://127.0.0.1:{port}"
    redis_dir = Path(tempfile.mkdtemp(prefix="gpulab-redis-"))
    box = {"proc": start_local_redis(url, redis_dir), "url": url, "dir": redis_dir}
    stack = Stack(database_url=f"sqlite:///{tmp / 'gpulab.sqlite3'}", redis_url=f"{url}/0", state_dir=tmp)
    try:
        yield stack.start(), box
    finally:
        stack.stop(after=lambda: (box["proc"].terminate(), box["proc"].wait(10)))


def test_cli_follow_survives_an_api_restart(own_redis_stack: tuple[Stack, dict]) -> None:
    stack, _ = own_redis_stack
    job = stack.submit("test-sleep", {"seconds": 6})
    stack.wait_for(job["id"], ("running",))
    follower = subprocess.Popen([sys.executable, "-m", "cli.main", "logs", str(job["id"]), "-f"],
                                env={**stack.env, "GPULAB_TOKEN": stack.token}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    stack.kill("api", signal.SIGTERM)
    time.sleep(1.5)
    stack.spawn("api", "api", "--port", str(stack.port))
    stack.wait(stack._ready, 60, "the restarted API")
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert "stream dropped" in err and "resuming after event" in err
    assert "slept 6" in out or "slept 6" in err
    assert stack.job(job["id"])["status"] == "succeeded"


def test_jobs_submitted_while_redis_is_down_run_when_it_returns(own_redis_stack: tuple[Stack, dict]) -> None:
    stack, box = own_redis_stack
    box["proc"].send_signal(signal.SIGTERM)
    box["proc"].wait(10)
    try:
        ready = stack.api("GET", "/readyz", expect=503)
        assert ready["checks"]["redis"].startswith("unavailable")
        ids = [stack.submit("test-echo", {"message": f"m{i}"})["id"] for i in range(3)]
        time.sleep(2)
        assert {stack.job(i)["status"] for i in ids} <= {"pending", "dispatched"}
    finally:
        # The same data folder: with AOF on, what the broker held comes back with it.
        box["proc"] = start_local_redis(box["url"], box["dir"])
    for job_id in ids:
        done = stack.wait_for(job_id, timeout=90)
        assert done["status"] == "succeeded", done
        assert done["runs"] == 1
    assert os.path.exists(box["dir"] / "redis.log")
