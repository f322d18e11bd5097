"""A job's end: its last log lines go in its outcome's commit, and never keep the outcome out."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from service import live
from service.db import Database
from service.live import Publisher
from service.models import Job, JobStatus, User
from service.scheduling.device_request import request_fields
from service.settings import Settings
from service.store.devices import register_worker
from service.store.events import list_events
from service.store.job_records import insert_job
from service.store.jobs import mark_dispatched, request_cancel
from service.store.samples import record_sample
from service.store.users import create_user
from worker.context import WorkerContext
from worker.device import DeviceInfo, cpu_info
from worker.runner import JobRunner, Outcome


@pytest.fixture
def device(db: Database) -> DeviceInfo:
    info = cpu_info("testhost")
    with db.writing() as s:
        register_worker(session=s, worker_id="w1", device=info.as_dict(), pid=1, slots=1)
    return info


def dispatched_job(db: Database, params: dict[str, Any], *, dispatch: bool = True) -> int:
    with db.writing() as s:
        owner, _ = create_user(session=s, name=f"member-{uuid.uuid4().hex[:8]}")
    with db.writing() as s:
        job, _ = insert_job(session=s, job=Job(owner_id=owner.id, kind="test-echo", params=params,
                                                **request_fields("cpu"), timeout_s=60, max_attempts=1))
    if dispatch:
        with db.writing() as s:
            assert mark_dispatched(session=s, job_id=job.id, attempt=0, device_id="testhost/cpu") == 1
            s.commit()
    return job.id


@pytest.fixture
def commits(db: Database) -> Iterator[list[int]]:
    seen: list[int] = []

    def count(_conn: Any) -> None:
        seen.append(1)

    event.listen(db.engine, "commit", count)
    yield seen
    event.remove(db.engine, "commit", count)


def test_the_last_log_lines_are_written_in_the_outcomes_commit(
        db: Database, settings: Settings, device: DeviceInfo, commits: list[int]) -> None:
    job_id = dispatched_job(db, {"lines": 3, "steps": 2})
    # No flush on a timer: whatever the machine's load, every line is still buffered at the end.
    quiet = settings.model_copy(update={"event_flush_s": 3600})
    commits.clear()
    outcome = JobRunner(settings=quiet, db=db, device=device, worker_id="w1").run(job_id, 1)
    assert outcome is not None and outcome.status == JobStatus.succeeded
    assert len(commits) == 2  # the claim, then the outcome with every line the job reported
    with db.reading() as s:
        events = list_events(session=s, job_id=job_id)
        job = s.get(Job, job_id)
    assert job is not None and job.status == JobStatus.succeeded and job.runtime
    after_claim = events[3:]
    assert [e["type"] for e in after_claim] == ["log"] * 3 + ["metric", "progress"] * 2 + ["log", "status"]
    assert [e["message"] for e in after_claim[:3]] == ["hello 0", "hello 1", "hello 2"]
    assert after_claim[-2]["message"].startswith("succeeded after ")
    assert after_claim[-1]["data"]["status"] == "succeeded"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["created_at"] for e in after_claim}) == 1  # one write


def test_lines_that_can_never_be_stored_are_dropped_and_the_outcome_is_written(
        db: Database, settings: Settings, device: DeviceInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = dispatched_job(db, {"lines": 1, "steps": 0})
    real = WorkerContext.buffered

    def with_a_bad_event(ctx: WorkerContext) -> list[dict[str, Any]]:
        ctx._buffer.append({"type": None, "message": "no type: the events table refuses it"})
        return real(ctx)

    monkeypatch.setattr(WorkerContext, "buffered", with_a_bad_event)
    outcome = JobRunner(settings=settings, db=db, device=device, worker_id="w1").run(job_id, 1)
    assert outcome is not None and outcome.status == JobStatus.succeeded
    with db.reading() as s:
        job = s.get(Job, job_id)
        statuses = [e["data"]["status"] for e in list_events(session=s, job_id=job_id) if e["type"] == "status"]
    assert job is not None and (job.status, job.error) == (JobStatus.succeeded, None)
    assert statuses == ["pending", "dispatched", "running", "succeeded"]


def test_a_cancel_requested_while_the_job_ran_ends_it_cancelled(
        db: Database, settings: Settings, device: DeviceInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = dispatched_job(db, {"lines": 0, "steps": 0})
    real = JobRunner._call

    def cancelled_meanwhile(runner: JobRunner, *args: Any) -> Outcome:
        with db.writing() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.status == JobStatus.running
            request_cancel(session=s, job_id=job_id, user=s.get_one(User, job.owner_id))
        return real(runner, *args)

    monkeypatch.setattr(JobRunner, "_call", cancelled_meanwhile)
    JobRunner(settings=settings, db=db, device=device, worker_id="w1").run(job_id, 1)
    with db.reading() as s:
        job = s.get(Job, job_id)
        logs = [e["message"] for e in list_events(session=s, job_id=job_id) if e["type"] == "log"]
    assert job is not None and (job.status, job.reason) == (JobStatus.cancelled, "cancelled")
    assert logs[-1].startswith("cancelled after ")


def test_a_finish_sends_the_next_job_before_its_live_messages(
        db: Database, settings: Settings, device: DeviceInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "_installation", "test")  # names the device's queue
    first = dispatched_job(db, {"lines": 0, "steps": 0})
    second = dispatched_job(db, {"lines": 0, "steps": 0}, dispatch=False)
    order: list[tuple[str, Any]] = []

    class Broker:
        def send_task(self, name: str, args: list[int], **_: Any) -> None:
            order.append(("send", args[0]))

    class Followers(Publisher):
        def publish(self, channel: str, payload: Any) -> None:
            order.append(("publish", channel))

        def publish_many(self, messages: list[tuple[str, Any]]) -> None:
            order.extend(("publish", channel) for channel, _ in messages)

    followers = Followers("redis://127.0.0.1:1")
    event.listen(db.write, "after_commit", followers._after_commit)
    JobRunner(settings=settings, db=db, device=device, worker_id="w1", celery=Broker(),  # type: ignore[arg-type]
              publisher=followers).run(first, 1)
    sent = order.index(("send", second))
    claim, finish = order[:sent], order[sent + 1:]
    assert claim and all(kind == "publish" for kind, _ in claim)  # the claim's, at its commit
    # The finish's messages (its status and the next job's dispatch) wait for the send.
    assert len(finish) >= 2 and all(kind == "publish" for kind, _ in finish)
    assert live.job_channel(first) in {channel for _, channel in finish}


def test_a_finish_that_places_the_next_job_loads_no_object_and_runs_its_fixed_statements(
        db: Database, settings: Settings, device: DeviceInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim and the finish load no object (the outcome's UPDATE is fenced by the cancel
    itself; the placement reads the newest sample's external memory as a column), so no ORM
    UPDATE has a loaded job to keep in step; on SQLite the probe of a short queue is also the
    plan's read of it."""
    monkeypatch.setattr(live, "_installation", "test")  # names the device's queue
    first = dispatched_job(db, {"lines": 0, "steps": 0})
    second, third = (dispatched_job(db, {"lines": 0, "steps": 0}, dispatch=False) for _ in range(2))
    with db.writing() as s:
        record_sample(session=s, device_id=device.id, sample={"external_mb": 0})
    sent: list[int] = []

    class Broker:
        def send_task(self, name: str, args: list[int], **_: Any) -> None:
            sent.append(args[0])

    runner = JobRunner(settings=settings, db=db, device=device, worker_id="w1", celery=Broker())  # type: ignore[arg-type]
    runner.run(first, 1)  # the first job of a process also records what it learned of the device
    assert sent == [second]
    loaded: list[str] = []
    statements: list[str] = []
    event.listen(db.write, "loaded_as_persistent", lambda _s, instance: loaded.append(type(instance).__name__))
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    outcome = runner.run(second, 1)
    assert outcome is not None and outcome.status == JobStatus.succeeded and sent == [second, third]
    assert loaded == []
    # The claim (UPDATE, its event), then the finish: its UPDATE, the allocation's DELETE, its
    # events; the queue (on PostgreSQL a probe, the lock, then the rows), the devices' holders,
    # samples and rows; the next job's UPDATE, event and allocation. SQLite adds its BEGIN
    # IMMEDIATE to each of the two transactions, and reads the queue once.
    assert len(statements) == 14, "\n".join(statements)
