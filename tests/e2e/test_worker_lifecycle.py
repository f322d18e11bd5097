"""The worker's children: warm between jobs, replaced after a CUDA fault or a crash; stale messages run nothing."""

from __future__ import annotations

import pytest

from service.queues import RUN_JOB, device_queue, make_celery
from service.settings import Settings
from tests.support.stack import Stack


@pytest.fixture(scope="module")
def own(sqlite_stack: Stack) -> Stack:
    return sqlite_stack


def run(stack: Stack, kind: str, params: dict | None = None, **fields) -> dict:
    return stack.wait_for(stack.submit(kind, params or {}, **fields)["id"])


def test_child_stays_warm_between_jobs(own: Stack) -> None:
    first = run(own, "test-echo")
    second = run(own, "test-echo")
    assert first["result"]["pid"] == second["result"]["pid"]


def test_a_child_runs_jobs_with_the_start_up_frozen(own: Stack) -> None:
    # torch, Celery and SQLAlchemy are in the collector's permanent generation: a full collection
    # (a GPU job's end makes one) walks only what the jobs made, not 270,000 start-up objects.
    assert run(own, "test-alloc", {"mb": 1})["result"]["gc_frozen"] > 100_000


def test_child_is_replaced_after_a_cuda_fault(own: Stack) -> None:
    before = run(own, "test-echo")["result"]["pid"]
    fault = run(own, "test-fail", {"mode": "cuda-fault"})
    assert (fault["status"], fault["reason"]) == ("failed", "user_error")
    assert "device-side assert" in fault["error"]
    after = run(own, "test-echo")
    assert after["status"] == "succeeded"
    assert after["result"]["pid"] != before


def test_crashed_child_is_retried_then_failed(own: Stack) -> None:
    crashed = run(own, "test-fail", {"mode": "crash"}, max_attempts=2)
    assert (crashed["status"], crashed["reason"], crashed["runs"]) == ("failed", "worker_lost", 2)
    events = own.api("GET", f"/jobs/{crashed['id']}/events", params={"type": "status"})["items"]
    assert [e["data"]["status"] for e in events].count("running") == 2
    assert run(own, "test-echo")["status"] == "succeeded"  # the worker goes on


def test_stale_or_duplicate_message_runs_nothing(own: Stack) -> None:
    done = run(own, "test-echo", {"message": "once"})
    celery = make_celery(Settings(redis_url=own.env["GPULAB_REDIS_URL"], state_dir=own.state_dir))
    queue = device_queue("testhost/cpu", installation=own.installation)
    celery.send_task(RUN_JOB, args=[done["id"], done["attempt"]], queue=queue)  # a redelivery
    celery.send_task(RUN_JOB, args=[done["id"], done["attempt"] + 5], queue=queue)  # a wrong attempt
    marker = run(own, "test-echo")  # the worker is single-slot: once this ran, those two were handled
    assert marker["status"] == "succeeded"
    again = own.job(done["id"])
    assert (again["status"], again["runs"], again["attempt"], again["finished_at"]) == (
        "succeeded", 1, 1, done["finished_at"])
    statuses = own.api("GET", f"/jobs/{done['id']}/events", params={"type": "status"})["items"]
    assert len(statuses) == 4


def test_two_dispatchers_never_dispatch_a_job_twice(own: Stack) -> None:
    own.spawn("dispatcher-2", "dispatcher")
    try:
        ids = [own.submit("test-echo", {"lines": 0, "steps": 0})["id"] for _ in range(15)]
        for job_id in ids:
            job = own.wait_for(job_id)
            assert (job["status"], job["attempt"], job["runs"]) == ("succeeded", 1, 1)
    finally:
        own.kill("dispatcher-2")
