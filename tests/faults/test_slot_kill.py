"""Two jobs share a worker's two slots; one runs past its time limit and is killed.

The kill is addressed to (job, attempt, pid): it reaches the process running the overdue
job, never the other slot's job, which runs on and succeeds.
"""

from __future__ import annotations

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
