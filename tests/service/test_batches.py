"""A batch (POST /jobs/batch's store path): every single submit's rule per entry, all or none,
the limits counted over the whole batch, and one INSERT and one plan for all of it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, func, select

from service.batches import submit_batch
from service.db import Database
from service.errors import Forbidden, IdempotencyConflict, InvalidParams, LimitExceeded
from service.models import Job, JobStatus, User
from service.schemas import JobCreate
from service.settings import Settings
from service.store.devices import register_worker
from service.store.users import create_user

DEVICE = {"id": "testhost/cpu", "host": "testhost", "kind": "cpu", "index": None, "name": "CPU",
          "uuid": None, "memory_total_mb": 1024}


def _lab(db: Database, slots: int = 1) -> User:
    with db.writing() as s:
        user, _ = create_user(session=s, name="ada")
        register_worker(session=s, worker_id="w1", device=DEVICE, pid=1, slots=slots)
    return user


def _echoes(n: int, **fields: Any) -> list[JobCreate]:
    return [JobCreate(kind="test-echo", params={"lines": i}, **fields) for i in range(n)]


def _jobs(db: Database) -> int:
    with db.reading() as s:
        return s.scalar(select(func.count(Job.id))) or 0


def test_a_batch_shares_one_id_and_places_what_fits(db: Database, settings: Settings) -> None:
    user = _lab(db, slots=2)
    with db.writing() as s:
        jobs, _, placed = submit_batch(session=s, settings=settings, user=user, bodies=_echoes(5))
    ids = [j.id for j in jobs]
    assert {j.batch_id for j in jobs} == {ids[0]}
    assert [d.job_id for d in placed] == ids[:2]  # two slots: the first two, in the queue's order
    with db.reading() as s:
        rows = {j.id: (j.status, j.batch_id, j.event_seq) for j in s.scalars(select(Job))}
    assert rows == {i: (JobStatus.dispatched if i in ids[:2] else JobStatus.pending, ids[0], 2 if i in ids[:2] else 1)
                    for i in ids}


def test_an_invalid_entry_refuses_the_whole_batch_naming_it(db: Database, settings: Settings) -> None:
    user = _lab(db)
    bodies = _echoes(4)
    bodies[2] = JobCreate(kind="test-echo", params={"lines": "many"})
    with db.writing() as s, pytest.raises(InvalidParams) as caught:
        submit_batch(session=s, settings=settings, user=user, bodies=bodies)
    problem = caught.value.problem()
    assert (problem["field"], problem["value"], problem["entry"]) == ("jobs[2].params.lines", "many", 2)
    assert problem["detail"].startswith("jobs[2].params.lines: ")
    assert _jobs(db) == 0


def test_a_member_cannot_raise_priority_through_a_batch(db: Database, settings: Settings) -> None:
    user = _lab(db)
    bodies = _echoes(3)
    bodies[1] = JobCreate(kind="test-echo", priority=5)
    with db.writing() as s, pytest.raises(Forbidden) as caught:
        submit_batch(session=s, settings=settings, user=user, bodies=bodies)
    assert (caught.value.field, caught.value.value) == ("jobs[1].priority", 5)
    assert _jobs(db) == 0


def test_the_pending_limit_counts_the_whole_batch(db: Database, settings: Settings) -> None:
    user = _lab(db, slots=0)  # nothing places: every job of a batch stays pending
    limited = settings.model_copy(update={"member_max_pending_jobs": 3})
    with db.writing() as s, pytest.raises(LimitExceeded) as caught:
        submit_batch(session=s, settings=limited, user=user, bodies=_echoes(4))
    assert (caught.value.field, caught.value.extra["adding"]) == ("member_max_pending_jobs", 4)
    assert _jobs(db) == 0
    with db.writing() as s:
        submit_batch(session=s, settings=limited, user=user, bodies=_echoes(2))
    with db.writing() as s, pytest.raises(LimitExceeded):
        submit_batch(session=s, settings=limited, user=user, bodies=_echoes(2))  # 2 + 2 > 3
    assert _jobs(db) == 2


def test_the_running_limit_holds_a_batch_back(db: Database, settings: Settings) -> None:
    user = _lab(db, slots=4)
    limited = settings.model_copy(update={"member_max_running_jobs": 1})
    with db.writing() as s:
        jobs, _, placed = submit_batch(session=s, settings=limited, user=user, bodies=_echoes(3))
    assert [d.job_id for d in placed] == [jobs[0].id]  # four free slots, one job: her limit
    assert [j.status for j in jobs] == [JobStatus.dispatched, JobStatus.pending, JobStatus.pending]


def test_a_batch_costs_statements_per_batch_not_per_job(db: Database, settings: Settings) -> None:
    """A batch that paid a single submit's statements per job would send over 500 for 50."""
    user = _lab(db, slots=0)
    sent: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    with db.writing() as s:
        submit_batch(session=s, settings=settings, user=user, bodies=_echoes(50))
    assert len(sent) <= 60, f"{len(sent)} statements:\n" + "\n".join(sent[:80])


def test_a_retried_batch_gets_its_jobs_back_and_a_changed_one_is_refused(db: Database, settings: Settings) -> None:
    user = _lab(db, slots=0)
    with db.writing() as s:
        jobs, created, _ = submit_batch(session=s, settings=settings, user=user, bodies=_echoes(3),
                                        idempotency_key="sweep-1")
    assert created
    with db.writing() as s:
        again, created, placed = submit_batch(session=s, settings=settings, user=user, bodies=_echoes(3),
                                              idempotency_key="sweep-1")
    assert not created and not placed and [j.id for j in again] == [j.id for j in jobs]
    changed = _echoes(3)
    changed[2] = JobCreate(kind="test-echo", params={"lines": 7})
    with db.writing() as s, pytest.raises(IdempotencyConflict) as caught:
        submit_batch(session=s, settings=settings, user=user, bodies=changed, idempotency_key="sweep-1")
    assert (caught.value.field, caught.value.extra["changed"]) == ("jobs[2].Idempotency-Key", ["params"])
    with db.writing() as s, pytest.raises(IdempotencyConflict, match="a batch of 3 jobs, not a batch of 2"):
        submit_batch(session=s, settings=settings, user=user, bodies=_echoes(2), idempotency_key="sweep-1")
    assert _jobs(db) == 3
