"""Job state changes in the store: each a conditional UPDATE, where a lost race is a no-op."""

from __future__ import annotations

import threading

import pytest

from service.db import Database
from service.errors import Forbidden, IdempotencyConflict, JobFinished
from service.models import Job, JobStatus
from service.scheduling.device_request import request_fields
from service.store.devices import register_worker
from service.store.events import list_events
from service.store.job_records import insert_job
from service.store.jobs import claim_job, finish_job, mark_dispatched, release_lost_job, request_cancel, undispatch
from service.store.users import create_user

DEVICE = {"id": "testhost/cpu", "host": "testhost", "kind": "cpu", "index": None, "name": "CPU",
          "uuid": None, "memory_total_mb": 1024}


@pytest.fixture
def users(db: Database):
    with db.writing() as s:
        alice, _ = create_user(session=s, name="alice")
        bob, _ = create_user(session=s, name="bob")
        root, _ = create_user(session=s, name="root", is_admin=True)
        register_worker(session=s, worker_id="w1", device=DEVICE, pid=1, slots=1)
    return alice, bob, root


def new_job(db: Database, owner_id: int, key: str | None = None, params: dict | None = None) -> Job:
    with db.writing() as s:
        job, _ = insert_job(session=s, job=Job(owner_id=owner_id, kind="test-echo", params=params or {},
                                                **request_fields("cpu"), timeout_s=60, max_attempts=2,
                                                idempotency_key=key))
    return job


def dispatch_and_claim(db: Database, job_id: int) -> int:
    with db.writing() as s:
        attempt = mark_dispatched(session=s, job_id=job_id, attempt=0, device_id="testhost/cpu")
        s.commit()
    assert attempt == 1
    with db.writing() as s:
        assert claim_job(session=s, job_id=job_id, attempt=1, device_id="testhost/cpu", worker_id="w1", pid=7)
    return attempt


def test_lifecycle_records_each_status_as_an_event(db: Database, users) -> None:
    alice = users[0]
    job = new_job(db, alice.id)
    attempt = dispatch_and_claim(db, job.id)
    with db.writing() as s:
        assert finish_job(session=s, job_id=job.id, attempt=attempt, status=JobStatus.succeeded, result={"x": 1})
    with db.reading() as s:
        done = s.get(Job, job.id)
        events = list_events(session=s, job_id=job.id)
    assert (done.status, done.result, done.runs) == ("succeeded", {"x": 1}, 1)
    assert [e["data"]["status"] for e in events] == ["pending", "dispatched", "running", "succeeded"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4]


def test_stale_attempt_claims_and_finishes_nothing(db: Database, users) -> None:
    job = new_job(db, users[0].id)
    with db.writing() as s:
        assert mark_dispatched(session=s, job_id=job.id, attempt=0, device_id="testhost/cpu") == 1
        s.commit()
    with db.writing() as s:
        assert undispatch(session=s, job_id=job.id, attempt=1, why="test")
    with db.writing() as s:
        assert mark_dispatched(session=s, job_id=job.id, attempt=0, device_id="testhost/cpu") is None
        assert mark_dispatched(session=s, job_id=job.id, attempt=1, device_id="testhost/cpu") == 2
        s.commit()
    with db.writing() as s:  # the first message arrives late: it is fenced out
        assert claim_job(session=s, job_id=job.id, attempt=1, device_id="testhost/cpu", worker_id="w1", pid=7) is None
    with db.writing() as s:  # a message for another device claims nothing either
        assert claim_job(session=s, job_id=job.id, attempt=2, device_id="other/cpu", worker_id="w1", pid=7) is None
    with db.writing() as s:
        assert claim_job(session=s, job_id=job.id, attempt=2, device_id="testhost/cpu", worker_id="w1", pid=7)
    with db.writing() as s:
        assert not finish_job(session=s, job_id=job.id, attempt=1, status=JobStatus.succeeded)
        assert finish_job(session=s, job_id=job.id, attempt=2, status=JobStatus.failed, reason="user_error")


def test_two_claims_race_and_exactly_one_wins(db: Database, users) -> None:
    jobs = [new_job(db, users[0].id) for _ in range(8)]
    for job in jobs:
        with db.writing() as s:
            mark_dispatched(session=s, job_id=job.id, attempt=0, device_id="testhost/cpu")
            s.commit()
    wins: list[tuple[int, int]] = []
    barrier = threading.Barrier(2)

    def claimer(pid: int) -> None:
        barrier.wait()
        for job in jobs:
            with db.writing() as s:
                if claim_job(session=s, job_id=job.id, attempt=1, device_id="testhost/cpu", worker_id="w1", pid=pid):
                    wins.append((job.id, pid))

    threads = [threading.Thread(target=claimer, args=(pid,)) for pid in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j for j, _ in wins) == [j.id for j in jobs]


def test_idempotency_key_returns_the_first_job(db: Database, users) -> None:
    first = new_job(db, users[0].id, key="k1", params={"message": "a"})
    with db.writing() as s:
        again, created = insert_job(session=s, job=Job(owner_id=users[0].id, kind="test-echo",
                                                        params={"message": "a"}, **request_fields("cpu"),
                                                        timeout_s=60, idempotency_key="k1"))
    assert (again.id, created) == (first.id, False)
    with db.writing() as s, pytest.raises(IdempotencyConflict):
        insert_job(session=s, job=Job(owner_id=users[0].id, kind="test-echo", params={"message": "b"},
                                      **request_fields("cpu"), timeout_s=60, idempotency_key="k1"))
    other = new_job(db, users[1].id, key="k1", params={"message": "a"})  # keys are per member
    assert other.id != first.id


def test_cancel_rules(db: Database, users) -> None:
    alice, bob, root = users
    pending = new_job(db, alice.id)
    with db.writing() as s, pytest.raises(Forbidden):
        request_cancel(session=s, job_id=pending.id, user=bob)
    with db.writing() as s:
        assert request_cancel(session=s, job_id=pending.id, user=alice).status == "cancelled"
    with db.writing() as s, pytest.raises(JobFinished):
        request_cancel(session=s, job_id=pending.id, user=alice)
    running = new_job(db, alice.id)
    dispatch_and_claim(db, running.id)
    with db.writing() as s:
        job = request_cancel(session=s, job_id=running.id, user=root)  # admins may cancel any job
    assert job.status == "running" and job.cancel_requested_at is not None and job.cancelled_by == "root"


def test_lost_job_is_retried_then_failed(db: Database, users) -> None:
    job = new_job(db, users[0].id)  # max_attempts=2
    dispatch_and_claim(db, job.id)
    with db.writing() as s:
        assert release_lost_job(session=s, job_id=job.id, attempt=1, why="child died") == "pending"
    with db.writing() as s:
        assert release_lost_job(session=s, job_id=job.id, attempt=1, why="again") is None  # no double release
    with db.writing() as s:
        assert mark_dispatched(session=s, job_id=job.id, attempt=1, device_id="testhost/cpu") == 2
        s.commit()
    with db.writing() as s:
        claim_job(session=s, job_id=job.id, attempt=2, device_id="testhost/cpu", worker_id="w1", pid=8)
    with db.writing() as s:
        assert release_lost_job(session=s, job_id=job.id, attempt=2, why="child died") == "failed"
    with db.reading() as s:
        failed = s.get(Job, job.id)
    assert (failed.reason, failed.runs) == ("worker_lost", 2)
    assert "after 2 runs" in failed.error
