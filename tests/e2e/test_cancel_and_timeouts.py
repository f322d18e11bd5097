"""Cancel and time limits of running jobs, and a redelivered long job that still runs once.

Each cooperative path has a hard twin: a job that ignores should_stop() is terminated after
the cancel grace, and one that swallows Celery's soft time limit is killed by the worker's
heartbeat. Either way the slot comes back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.conftest import _stack
from tests.support.stack import Stack

# A worker whose Redis visibility timeout (2 s) is shorter than the job it runs: Redis hands
# the message out again while the job runs. The settings' own check needs a shorter
# GPULAB_MAX_TIMEOUT_S in that worker's environment; the API keeps the usual limits.
SHORT_VISIBILITY = {"GPULAB_VISIBILITY_TIMEOUT_S": "2", "GPULAB_MAX_TIMEOUT_S": "1",
                    "GPULAB_DEFAULT_TIMEOUT_S": "1"}


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A running job looks for its cancel once a second (worker/context.py, STOP_POLL_S): the test
    # stacks' grace of 1 s raced that look, and a loaded machine lost the race (killed, no result).
    yield from _stack("sqlite", tmp_path_factory.mktemp("cancel-stack"), env={"GPULAB_CANCEL_GRACE_S": "3"})


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def statuses(stack: Stack, job_id: int) -> list[str]:
    events = stack.api("GET", f"/jobs/{job_id}/events", params={"type": "status"})["items"]
    return [e["data"]["status"] for e in events]


def test_cancel_of_a_running_job_stops_it_at_its_next_step(own: Stack) -> None:
    job_id = own.submit("test-sleep", {"seconds": 30})["id"]
    own.wait_for(job_id, ("running",))
    asked = own.api("POST", f"/jobs/{job_id}/cancel")
    assert asked["status"] == "running" and asked["cancel_requested_at"]
    done = own.wait_for(job_id, timeout=10)
    assert (done["status"], done["reason"], done["cancelled_by"]) == ("cancelled", "cancelled", "admin")
    assert done["result"]["stopped_early"] is True
    assert own.wait_for(own.submit("test-echo", {"lines": 0})["id"])["status"] == "succeeded"


def test_a_job_that_ignores_cancel_is_killed_after_the_grace_and_the_slot_returns(own: Stack) -> None:
    job_id = own.submit("test-sleep", {"seconds": 60, "ignore_stop": True})["id"]
    pid = own.wait_for(job_id, ("running",))
    own.api("POST", f"/jobs/{job_id}/cancel")
    done = own.wait_for(job_id, timeout=15)
    assert (done["status"], done["reason"], done["result"]) == ("cancelled", "cancelled", None)
    grace = float(own.env["GPULAB_CANCEL_GRACE_S"])
    assert (at(done["finished_at"]) - at(done["cancel_requested_at"])).total_seconds() >= grace
    after = own.wait_for(own.submit("test-echo", {"lines": 0})["id"])
    assert after["status"] == "succeeded" and after["device_id"] == pid["device_id"]
    assert statuses(own, job_id).count("running") == 1


def test_time_limit_fails_the_job_with_reason_timeout(own: Stack) -> None:
    soft = own.wait_for(own.submit("test-sleep", {"seconds": 30, "ignore_stop": True}, timeout_s=1)["id"],
                        timeout=20)
    assert (soft["status"], soft["reason"]) == ("failed", "timeout")
    assert "time limit" in soft["error"]
    # One that swallows the soft limit is killed by the worker's heartbeat after the grace.
    hard = own.wait_for(own.submit("test-sleep", {"seconds": 30, "ignore_stop": True, "ignore_time_limit": True},
                                   timeout_s=1)["id"], timeout=20)
    assert (hard["status"], hard["reason"]) == ("failed", "timeout")
    assert "killed after its time limit of 1 s" in hard["error"]
    assert own.wait_for(own.submit("test-echo", {"lines": 0})["id"])["status"] == "succeeded"


def test_timeout_above_the_servers_limit_is_refused(own: Stack) -> None:
    problem = own.api("POST", "/jobs", json={"kind": "test-echo", "timeout_s": 10**9}, expect=422)
    assert (problem["code"], problem["field"], problem["value"]) == ("invalid_request", "timeout_s", 10**9)


def test_a_job_longer_than_the_visibility_timeout_runs_exactly_once(own: Stack) -> None:
    device = own.add_worker("cpu", host="shortvis", slots=2, env=SHORT_VISIBILITY)
    started = time.monotonic()
    job_id = own.submit("test-sleep", {"seconds": 7}, device=device, timeout_s=30)["id"]
    done = own.wait_for(job_id, timeout=30)
    assert time.monotonic() - started >= 7
    assert (done["status"], done["runs"], done["attempt"]) == ("succeeded", 1, 1)
    assert done["result"]["stopped_early"] is False
    assert statuses(own, job_id) == ["pending", "dispatched", "running", "succeeded"]
    # Redis did hand the message out again, and the second delivery claimed nothing.
    log = (own.logs / "worker-shortvis_cpu.log").read_text()
    assert f"job {job_id} attempt 1: claim refused" in log
