"""A job's end: its last log lines go in its outcome's commit, and never keep the outcome out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from service.db import Database
from service.models import Job, JobStatus, User
from service.scheduling.device_request import request_fields
from service.settings import Settings
from service.store.devices import register_worker
from service.store.events import list_events
from service.store.jobs import insert_job, mark_dispatched, request_cancel
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


def dispatched_job(db: Database, params: dict[str, Any]) -> int:
    with db.writing() as s:
        owner, _ = create_user(session=s, name=f"member{params.get('lines', 0)}")
    with db.writing() as s:
        job, _ = insert_job(session=s, job=Job(owner_id=owner.id, kind="test-echo", params=params,
                                                **request_fields("cpu"), timeout_s=60, max_attempts=1))
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
