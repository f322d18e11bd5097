"""Celery's own tools on gpulab's broker: `celery -A worker.app inspect …` and Flower see the
real workers, their queues, and (with GPULAB_CELERY_EVENTS) the tasks they ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.queues import device_queue
from tests.support.stack import Stack, free_port

NODE = "gpulab-testhost-cpu@testhost"


def celery(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "worker.app", *args], env=stack.env,
                          capture_output=True, text=True, timeout=60)


def inspect(stack: Stack, command: str) -> subprocess.CompletedProcess[str]:
    """`celery inspect COMMAND` addressed to the node: it returns at the node's answer instead
    of listening out its whole --timeout for others (5 s a call)."""
    return celery(stack, "inspect", command, "--destination", NODE, "--timeout", "5", "--json")


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_inspect_ping_active_and_stats_see_the_worker(stack: Stack) -> None:
    name = NODE
    ping = inspect(stack, "ping")
    assert ping.returncode == 0, ping.stderr
    assert json.loads(ping.stdout)[name] == {"ok": "pong"}
    queues = inspect(stack, "active_queues")
    mine = device_queue("testhost/cpu", installation=stack.installation)
    assert [q["name"] for q in json.loads(queues.stdout)[name]] == [mine]
    active = inspect(stack, "active")
    assert json.loads(active.stdout)[name] == []
    stats = inspect(stack, "stats")
    assert json.loads(stats.stdout)[name]["pool"]["max-concurrency"] == 1


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_inspect_answers_only_for_its_own_installation(stack: Stack, tmp_path: Path) -> None:
    """Another installation on the same Redis, with a worker of the same node name: each one's
    `celery inspect` hears only its own worker (before, they shared one control queue, and
    which worker answered was chance)."""
    other = Stack(database_url=f"sqlite:///{tmp_path / 'other.sqlite3'}", redis_url=stack.env["GPULAB_REDIS_URL"],
                  state_dir=tmp_path).start()
    try:
        name = NODE
        for own in (stack, other, stack, other, stack, other):
            queues = inspect(own, "active_queues")
            assert queues.returncode == 0, queues.stderr
            answered = json.loads(queues.stdout)
            assert [q["name"] for q in answered[name]] == [device_queue("testhost/cpu",
                                                                        installation=own.installation)]
    finally:
        other.stop()


def test_flower_sees_the_workers_queues_and_tasks(sqlite_stack: Stack) -> None:
    # A stack of this module's own: the worker it adds must not take the shared stack's jobs.
    stack = sqlite_stack
    device = stack.add_worker("cpu", host="flowerhost", env={"GPULAB_CELERY_EVENTS": "true"})
    port = free_port()
    env = {**stack.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    with open(stack.logs / "flower.log", "wb") as log:
        flower = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.app", "flower",
                                   f"--port={port}", "--address=127.0.0.1"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    installation = stack.installation
    seen: dict[str, Any] = {}

    def get(path: str) -> Any:
        try:
            r = httpx.get(url + path, timeout=10)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    try:
        def workers_seen() -> bool:
            seen["workers"] = get("/api/workers?refresh=1") or {}
            return {"gpulab-testhost-cpu@testhost", "gpulab-flowerhost-cpu@flowerhost"} <= set(seen["workers"])

        stack.wait(workers_seen, 60, f"Flower to list both workers (saw {list(seen.get('workers', {}))})")
        job = stack.wait_for(stack.submit("test-echo", {"message": "to flower"}, device=device)["id"])
        assert job["status"] == "succeeded"

        def queues_and_task_seen() -> bool:
            seen["queues"] = get("/api/queues/length") or {}
            seen["tasks"] = get("/api/tasks") or {}
            names = {q["name"] for q in seen["queues"].get("active_queues", [])}
            ran = [t for t in seen["tasks"].values() if t.get("name") == "gpulab.run_job"
                   and t.get("args", "").startswith(f"[{job['id']},")]
            return {device_queue(d, installation=installation) for d in ("testhost/cpu", device)} <= names and bool(ran)

        stack.wait(queues_and_task_seen, 60, f"Flower to see gpulab's queues and the task (saw {seen})")
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(timeout=30)
