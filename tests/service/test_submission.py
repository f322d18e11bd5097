"""A submit into an empty queue: what it answers is what it wrote, in the statements placing needs;
its live messages wait for the job's send."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select, update

from service.db import Database
from service.live import Publisher
from service.models import Device, DeviceState, Job, JobStatus
from service.scheduling import starting
from service.scheduling.dispatcher import Dispatcher
from service.scheduling.starting import pending_and_room, place_if_queue_short
from service.schemas import JobCreate
from service.settings import Settings
from service.store.devices import register_worker
from service.store.events import list_events
from service.store.jobs import claim_job, finish_job
from service.store.users import create_user
from service.submission import submit

DEVICE = {"id": "testhost/cpu", "host": "testhost", "kind": "cpu", "index": None, "name": "CPU",
          "uuid": None, "memory_total_mb": 1024}


def _member(db: Database) -> Any:
    with db.writing() as s:
        user, _ = create_user(session=s, name="ada")
        register_worker(session=s, worker_id="w1", device=DEVICE, pid=1, slots=1)
    return user


def test_a_lone_submit_answers_the_dispatch_it_wrote(db: Database, settings: Settings) -> None:
    user = _member(db)
    with db.writing() as s:
        job, created, placed = submit(session=s, settings=settings, user=user, idempotency_key=None,
                                      body=JobCreate(kind="test-echo", params={"lines": 0}))
    assert created and [d.job_id for d in placed] == [job.id]
    with db.reading() as s:
        row = s.get(Job, job.id)
        assert row is not None
        stored = (row.status, row.attempt, row.device_id, row.device_ids, row.dispatched_at, row.event_seq)
        events = list_events(session=s, job_id=job.id)
    assert (job.status, job.attempt, job.device_id, job.device_ids, job.dispatched_at) == stored[:5]
    assert stored[0] == JobStatus.dispatched and stored[5] == 2
    assert [(e["seq"], e["data"]["status"]) for e in events] == [(1, "pending"), (2, "dispatched")]
    with db.reading() as s:  # empty JSON columns hold SQL NULL, not JSON 'null'
        nulls = s.execute(select(Job.result.is_(None), Job.runtime.is_(None), Job.idempotency_key.is_(None))
                          .where(Job.id == job.id)).one()
    assert tuple(nulls) == (True, True, True)


def test_a_lone_submit_sends_only_the_statements_placing_it_needs(db: Database, settings: Settings) -> None:
    """No fair-share usage (one job orders nothing), no member loads (no limits), no re-read:
    11 statements on each database, BEGIN included on SQLite. PostgreSQL sends no member row lock
    (no pending limit, no Idempotency-Key) and inserts the job with its first event in one
    statement, but its plan reads the devices again (a device may change while the submit waits
    for the placement lock)."""
    user = _member(db)
    sent: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    with db.writing() as s:
        submit(session=s, settings=settings, user=user, idempotency_key=None,
               body=JobCreate(kind="test-echo", params={"lines": 0}))
    assert len(sent) <= 11, "\n".join(sent)
    assert not any("finished_at >=" in statement for statement in sent)
    assert sum(statement.startswith("SELECT devices.id") for statement in sent) == (1 if settings.is_sqlite else 2)


@pytest.mark.parametrize("limit, key", [(0, None), (5, None), (0, "k1")])
def test_the_member_lock_is_taken_where_a_limit_or_a_key_needs_it(
        db: Database, settings: Settings, limit: int, key: str | None) -> None:
    """PostgreSQL: the pending limit's count and the key's lookup are read under the member's row
    lock; a submit with neither sends no lock. SQLite's write transaction serialises: never sent."""
    user = _member(db)
    sent: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    with db.writing() as s:
        job, created, _ = submit(session=s, settings=settings.model_copy(update={"member_max_pending_jobs": limit}),
                                 user=user, idempotency_key=key, body=JobCreate(kind="test-echo", params={"lines": 0}))
    assert created and job.idempotency_key == key
    locks = sum("FOR UPDATE" in statement for statement in sent)
    assert locks == (0 if settings.is_sqlite or not (limit or key) else 1), "\n".join(sent)


class Recording(Publisher):
    def __init__(self) -> None:
        super().__init__("redis://127.0.0.1:1/0")
        self.sent: list[tuple[str, Any]] = []

    def publish(self, channel: str, payload: Any) -> None:
        self.sent.append((channel, payload))

    def publish_many(self, messages: list[tuple[str, Any]]) -> None:
        self.sent.extend(messages)


def test_held_live_messages_go_out_at_release_not_at_commit(db: Database, settings: Settings) -> None:
    user = _member(db)
    publisher = Recording()
    publisher.attach(db.write)
    with db.write() as s:
        publisher.hold(s)
        job, _, _ = submit(session=s, settings=settings, user=user, idempotency_key=None,
                           body=JobCreate(kind="test-echo", params={"lines": 0}))
        assert publisher.sent == []  # committed, and nothing published yet
        publisher.release(s)
    statuses = [p["status"] for _, p in publisher.sent if isinstance(p, dict) and p.get("id") == job.id]
    assert statuses == ["dispatched"]
    assert any(channel.endswith(f"job:{job.id}") for channel, _ in publisher.sent)


def _submit(db: Database, settings: Settings, user: Any) -> tuple[Job, list[Any]]:
    with db.writing() as s:
        job, _, placed = submit(session=s, settings=settings, user=user, idempotency_key=None,
                                body=JobCreate(kind="test-echo", params={"lines": 0}))
    return job, placed


def test_a_submit_while_every_device_is_full_plans_nothing_and_the_finish_places_it(
        db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    user = _member(db)  # one CPU device, one slot
    first, placed = _submit(db, settings, user)
    assert [d.job_id for d in placed] == [first.id]
    with db.writing() as s:
        assert claim_job(session=s, job_id=first.id, attempt=1, device_id=DEVICE["id"], worker_id="w1", pid=1)

    def no_plan(*_: Any, **__: Any) -> Any:
        raise AssertionError("planned while no device had room")

    with monkeypatch.context() as m:
        m.setattr(starting, "plan_queue", no_plan)
        second, placed = _submit(db, settings, user)
        assert placed == [] and second.status == JobStatus.pending
        assert Dispatcher(settings, db=db).dispatch() == 0  # the pass the submit woke reads, then stops
    with db.reading() as s:
        assert pending_and_room(s) == (True, False)
    # The finish that frees the device places the waiting job in its own transaction.
    into: list[Any] = []
    with db.writing() as s:
        assert finish_job(session=s, job_id=first.id, attempt=1, status=JobStatus.succeeded,
                          then=lambda s: place_if_queue_short(session=s, settings=settings, into=into))
    assert [d.job_id for d in into] == [second.id]


def test_room_counts_slots_and_only_online_devices(db: Database, settings: Settings) -> None:
    user = _member(db)
    with db.writing() as s:
        register_worker(session=s, worker_id="w2", device=DEVICE, pid=2, slots=2)  # a new incarnation
    first, placed = _submit(db, settings, user)
    assert placed and placed[0].job_id == first.id
    with db.reading() as s:
        assert pending_and_room(s) == (False, True)  # one of two slots taken
    second, placed = _submit(db, settings, user)
    assert [d.job_id for d in placed] == [second.id]
    with db.reading() as s:
        assert pending_and_room(s) == (False, False)
    with db.writing() as s:
        s.execute(update(Device).values(state=DeviceState.offline, slots=3))
        s.commit()
    with db.reading() as s:
        assert pending_and_room(s) == (False, False)  # room, but on no online device


def test_no_column_of_jobs_has_a_server_default() -> None:
    # A submitted job is one Core INSERT that sets every column, from the model's Python defaults
    # or NULL (store/job_records.py): a default only the database knows would be overwritten with
    # NULL. A new column takes a Python default in models.py (a migration may add both).
    assert [c.key for c in Job.__table__.c if c.server_default is not None] == []
