"""Two jobs share a worker's two slots; one runs past its time limit and is killed.

The kill is addressed to (job, attempt, pid): it reaches the process running the overdue
job, never the other slot's job, which runs on and succeeds. A job's process killed from
outside (the OOM killer) is one line in the worker's log, naming the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.support.stack import Stack


@pytest.fixture(scope="module")
def own(sqlite_stack: Stack) -> Stack:
    return sqlite_stack


def test_a_job_killed_for_its_time_limit_leaves_the_other_slots_job_running(own: Stack) -> None:
    device = own.add_worker("cpu", host="slots", slots=2)
    # Swallows both the cooperative stop and the soft limit: only the hard kill ends it.
    overdue = own.submit("test-sleep", {"seconds": 60, "ignore_stop": True, "ignore_time_limit": True},
                         device=device, timeout_s=2)
    other = own.submit("test-sleep", {"seconds": 8}, device=device, timeout_s=120)
    first = own.wait_for(overdue["id"], ("running",))
    second = own.wait_for(other["id"], ("running",))
    killed = own.wait_for(overdue["id"], timeout=30)
    assert (killed["status"], killed["reason"]) == ("failed", "timeout")
    assert "killed after its time limit of 2 s" in killed["error"]
    survived = own.wait_for(other["id"], timeout=30)
    assert (survived["status"], survived["runs"]) == ("succeeded", 1)
    assert survived["result"]["stopped_early"] is False
    assert second["device_id"] == first["device_id"] == device
    # They ran side by side: the kill came while the other slot's job was running.
    assert survived["started_at"] < killed["finished_at"] < survived["finished_at"]


def _pool_children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == parent:
                    found.append(int(entry.name))
    return found


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_a_job_whose_process_is_killed_is_one_line_in_the_worker_log(own: Stack, level: str) -> None:
    device = f"lost-{level.lower()}/cpu"
    own.spawn(f"worker-{device}", "worker", "--device", "cpu", "--host-name", device.split("/")[0],
              "--log-level", level)
    own.wait_online(device)
    job = own.submit("test-sleep", {"seconds": 3}, device=device, timeout_s=120)
    running = own.wait_for(job["id"], ("running",))
    [child] = _pool_children(own.procs[f"worker-{device}"].pid)
    os.kill(child, signal.SIGKILL)  # what the OOM killer does
    done = own.wait_for(job["id"], timeout=60)
    assert (done["status"], done["runs"]) == ("succeeded", 2), done
    text = (own.logs / f"worker-{device.replace('/', '_')}.log").read_text()
    lines = [line for line in text.splitlines() if f"job {job['id']} attempt {running['attempt']}: its process" in line]
    assert len(lines) == 1 and f"(pid {child})" in lines[0] and "signal 9 (SIGKILL)" in lines[0], text[-3000:]
    # Celery's traceback is there on request only.
    assert ("Traceback" in text and "WorkerLostError" in text) == (level == "DEBUG"), text[-3000:]
