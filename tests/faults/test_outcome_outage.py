"""A job's end is written whatever happens to the database meanwhile; text is made storable.

The outage runs against a PostgreSQL cluster of this test's own (stopped at once, as in a
crash); the text checks run on both databases.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import next_redis_url
from tests.support.private_services import PrivatePostgres
from tests.support.stack import Stack


@pytest.fixture
def pg_stack(tmp_path: Path) -> Iterator[tuple[Stack, PrivatePostgres]]:
    pg = PrivatePostgres().start()
    stack = Stack(database_url=pg.create_database(), redis_url=next_redis_url(), state_dir=tmp_path)
    try:
        yield stack.start(), pg
    finally:
        stack.stop(after=pg.remove)


def test_an_outcome_reached_during_a_database_outage_is_written_when_it_returns(
        pg_stack: tuple[Stack, PrivatePostgres]) -> None:
    stack, pg = pg_stack
    job = stack.submit("test-sleep", {"seconds": 3}, timeout_s=600)
    stack.wait_for(job["id"], ("running",))
    pg.stop()
    down_at = time.monotonic()
    try:
        # The job ends while the database is away: its child keeps the outcome and retries.
        worker_log = stack.logs / "worker-testhost_cpu.log"
        stack.wait(lambda: f"job {job['id']}'s outcome not written yet" in worker_log.read_text(),
                   30, "the job to end during the outage")
        # The outage outlasts the worker timeout: no heartbeat could be written meanwhile, and
        # the worker must not be declared lost for that silence once the database is back.
        time.sleep(max(0.0, down_at + 2 * float(stack.env["GPULAB_WORKER_TIMEOUT_S"]) - time.monotonic()))
    finally:
        pg.start()
    done = stack.wait_for(job["id"], timeout=60)
    assert (done["status"], done["runs"], done["attempt"]) == ("succeeded", 1, 1)
    assert done["result"]["stopped_early"] is False
    logs = stack.api("GET", f"/jobs/{job['id']}/events", params={"type": "log"})["items"]
    assert any(e["message"] == "slept 3.0 s" for e in logs)
    # The worker was not declared lost for the silence the outage imposed, and goes on.
    after = stack.wait_for(stack.submit("test-echo", {"lines": 1})["id"])
    assert (after["status"], after["device_id"]) == ("succeeded", "testhost/cpu")


def test_nul_bytes_and_lone_surrogates_in_log_and_error_text_end_in_a_definite_state(stack: Stack) -> None:
    failed = stack.wait_for(stack.submit("test-fail", {"mode": "hostile-text", "message": "broke"})["id"])
    assert (failed["status"], failed["reason"]) == ("failed", "user_error")
    assert "broke\\x00 \\ud800" in failed["error"]
    logs = [e["message"] for e in stack.api("GET", f"/jobs/{failed['id']}/events", params={"type": "log"})["items"]]
    assert "nul\\x00here and a lone \\ud800 surrogate" in logs
    metrics = stack.api("GET", f"/jobs/{failed['id']}/metrics")
    assert [m["name"] for m in metrics] == ["loss\\x00\\udc80"]

    ok = stack.wait_for(stack.submit("test-echo", {"lines": 0, "hostile_result": True})["id"])
    assert ok["status"] == "succeeded"
    assert ok["result"]["text\\x00"] == ["a\\x00b", "\\udfff", None]
