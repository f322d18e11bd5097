"""The worker parent's watch: a kill reaches only the process running that job and attempt.

Real database rows and a real child process; what the Celery parent handed out (pid → job,
attempt) is the one input given by hand, since only a running Celery parent knows it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update

from service.db import Database
from service.models import Job, JobStatus, utcnow
from service.scheduling.device_request import request_fields
from service.settings import Settings
from service.store.devices import register_worker, stop_worker
from service.store.job_records import insert_job
from service.store.jobs import claim_job, mark_dispatched
from service.store.users import create_user
from worker.heartbeat import UNHELD_BEATS, Watch

DEVICE = {"id": "testhost/cpu", "host": "testhost", "kind": "cpu", "index": None, "name": "CPU",
          "uuid": None, "memory_total_mb": 1024}


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait(10)


def overdue_job(db: Database, pid: int) -> int:
    """A job claimed by `pid` whose time limit has long passed."""
    with db.writing() as s:
        owner, _ = create_user(session=s, name="alice")
        register_worker(session=s, worker_id="w1", device=DEVICE, pid=1, slots=2)
        job, _ = insert_job(session=s, job=Job(owner_id=owner.id, kind="test-sleep", params={},
                                               **request_fields("cpu"), timeout_s=1, max_attempts=2))
    with db.writing() as s:
        mark_dispatched(session=s, job_id=job.id, attempt=0, device_id="testhost/cpu")
        s.commit()
    with db.writing() as s:
        claim_job(session=s, job_id=job.id, attempt=1, device_id="testhost/cpu", worker_id="w1", pid=pid)
        s.execute(update(Job).where(Job.id == job.id).values(started_at=utcnow() - timedelta(seconds=60)))
        s.commit()
    return job.id


def test_the_time_limit_kill_reaches_the_child_running_that_job_and_attempt(
        db: Database, settings: Settings, child: subprocess.Popen[bytes]) -> None:
    job_id = overdue_job(db, child.pid)
    watch = Watch(settings=settings, db=db, worker_id="w1", requests=lambda: {child.pid: (job_id, 1)})
    assert watch.check_jobs() == [job_id]
    assert child.wait(10) == -15  # SIGTERM


def test_a_child_that_moved_on_to_another_job_is_never_signalled(
        db: Database, settings: Settings, child: subprocess.Popen[bytes]) -> None:
    job_id = overdue_job(db, child.pid)
    # The same pid now runs another member's job: the overdue job runs nowhere.
    watch = Watch(settings=settings, db=db, worker_id="w1", requests=lambda: {child.pid: (job_id + 100, 1)})
    assert watch.check_jobs() == []
    assert child.poll() is None
    with db.reading() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.status, job.pid) == (JobStatus.pending, None)  # released, to run again


def test_a_running_row_that_no_child_holds_is_released_after_a_few_beats(
        db: Database, settings: Settings, child: subprocess.Popen[bytes]) -> None:
    job_id = overdue_job(db, child.pid)
    # The task ended without recording the end (its claim's answer was lost, say): the
    # process lives on, holding nothing.
    watch = Watch(settings=settings, db=db, worker_id="w1", requests=lambda: {})
    for _ in range(UNHELD_BEATS - 1):
        assert watch.check_jobs() == [job_id]  # the parent may not have heard of it yet
    assert watch.check_jobs() == []
    assert child.poll() is None
    with db.reading() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == JobStatus.pending


def test_a_beat_during_the_worker_s_own_shutdown_is_not_a_loss(db: Database, settings: Settings,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The warm shutdown stops the watch and records the worker's stop; a beat already under way
    then finds its row stopped. That is the worker leaving, not the dispatcher declaring it lost."""
    with db.writing() as s:
        register_worker(session=s, worker_id="w1", device=DEVICE, pid=1, slots=1)
    left: list[str] = []
    watch = Watch(settings=settings, db=db, worker_id="w1", requests=lambda: {}, on_lost=lambda: left.append("lost"))
    watch.stop.set()  # worker.app's shutdown: the watch first, then the row
    with db.writing() as s:
        stop_worker(session=s, worker_id="w1")
    with caplog.at_level(logging.INFO, logger="gpulab.worker"):
        watch.beat()
    assert left == [] and not watch.lost
    assert "declared lost" not in caplog.text

    # The same row stopped while the watch runs on is a loss: the worker leaves to be restarted.
    watch.stop.clear()
    watch.beat()
    assert left == ["lost"] and watch.lost
