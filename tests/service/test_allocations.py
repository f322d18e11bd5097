"""Allocations: a gang's devices are taken in the dispatching transaction and freed by every way out."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from service.accounting.usage import job_usage
from service.db import Database
from service.models import Allocation, Device, DeviceState, Job, JobEvent, JobStatus, utcnow
from service.scheduling.device_request import request_fields
from service.scheduling.dispatcher import Dispatcher
from service.scheduling.fairshare import member_usage
from service.scheduling.queue_state import device_rooms
from service.settings import Settings
from service.store.allocations import job_devices, jobs_on_devices
from service.store.devices import declare_worker_lost, register_worker
from service.store.job_records import insert_job
from service.store.jobs import claim_job, finish_job, mark_dispatched, release_lost_job, undispatch
from service.store.users import create_user

CPUS = [f"testhost/cpu:{i}" for i in (0, 1)]


@pytest.fixture
def owner(db: Database) -> int:
    with db.writing() as s:
        user, _ = create_user(session=s, name="alice")
        for i, device_id in enumerate(CPUS):
            register_worker(session=s, worker_id=f"w{i}", pid=1, slots=2,
                            device={"id": device_id, "host": "testhost", "kind": "cpu", "index": i, "name": "CPU",
                                    "uuid": None, "memory_total_mb": 1024})
        return user.id


def gang(db: Database, owner: int) -> int:
    with db.writing() as s:
        job, _ = insert_job(session=s, job=Job(owner_id=owner, kind="test-echo", params={}, **request_fields("cpu"),
                                               gpus=2, timeout_s=60, max_attempts=3))
        s.commit()
        return job.id


def dispatch(db: Database, job_id: int, attempt: int = 0) -> int:
    with db.writing() as s:
        new = mark_dispatched(session=s, job_id=job_id, attempt=attempt, device_id=CPUS[0], devices=CPUS)
        s.commit()
    assert new == attempt + 1
    return new


def held(db: Database, job_id: int) -> list[tuple[str, int, bool]]:
    with db.reading() as s:
        return [(a.device_id, a.attempt, a.leader) for a in
                s.query(Allocation).filter(Allocation.job_id == job_id).order_by(Allocation.rank)]


def test_a_gang_holds_every_device_while_it_runs_and_frees_them_together(db: Database, owner: int) -> None:
    job_id = gang(db, owner)
    attempt = dispatch(db, job_id)
    assert held(db, job_id) == [(CPUS[0], 1, True), (CPUS[1], 1, False)]
    with db.reading() as s:
        assert [d.id for d in job_devices(session=s, job_id=job_id)] == CPUS
        assert s.get(Job, job_id).device_ids == CPUS  # type: ignore[union-attr]  # kept after the end, for usage
        assert jobs_on_devices(session=s) == {CPUS[0]: [job_id], CPUS[1]: [job_id]}
        rooms = {r.id: r for r in device_rooms(s)}
    # Both devices are the gang's alone: no slot job may join either.
    assert all(rooms[d].exclusive and rooms[d].jobs == 1 for d in CPUS)
    with db.writing() as s:
        assert claim_job(session=s, job_id=job_id, attempt=attempt, device_id=CPUS[0], worker_id="w0", pid=7)
    with db.writing() as s:
        assert finish_job(session=s, job_id=job_id, attempt=attempt, status=JobStatus.succeeded, result={})
    assert held(db, job_id) == []
    with db.reading() as s:
        assert s.get(Job, job_id).device_ids == CPUS  # type: ignore[union-attr]


@pytest.mark.parametrize("way_out", ["undispatch", "worker_lost"])
def test_every_way_back_to_pending_frees_the_devices(db: Database, owner: int, way_out: str) -> None:
    job_id = gang(db, owner)
    attempt = dispatch(db, job_id)
    with db.writing() as s:
        if way_out == "undispatch":
            assert undispatch(session=s, job_id=job_id, attempt=attempt, why="test")
        else:
            assert claim_job(session=s, job_id=job_id, attempt=attempt, device_id=CPUS[0], worker_id="w0", pid=7)
            s.commit()
            assert release_lost_job(session=s, job_id=job_id, attempt=attempt, why="test") is not None
            s.commit()
    assert held(db, job_id) == []
    with db.reading() as s:
        assert s.get(Job, job_id).device_ids is None  # type: ignore[union-attr]
    # The next attempt takes them again, under its own fence.
    assert dispatch(db, job_id, attempt) == attempt + 1
    assert [a for _, a, _ in held(db, job_id)] == [attempt + 1, attempt + 1]


def claimed_gang(db: Database, owner: int) -> tuple[int, int]:
    job_id = gang(db, owner)
    attempt = dispatch(db, job_id)
    with db.writing() as s:
        assert claim_job(session=s, job_id=job_id, attempt=attempt, device_id=CPUS[0], worker_id="w0", pid=7)
    return job_id, attempt


def test_a_lost_worker_of_a_non_leader_device_loses_the_gang(db: Database, owner: int) -> None:
    job_id, attempt = claimed_gang(db, owner)
    with db.writing() as s:
        assert declare_worker_lost(session=s, worker_id="w1") == [(job_id, attempt)]


def test_a_gang_placed_after_a_new_incarnation_took_the_device_is_not_the_lost_ones(db: Database,
                                                                                      owner: int) -> None:
    with db.writing() as s:  # cpu:1's worker restarted before its old incarnation was found silent
        register_worker(session=s, worker_id="w1-new", pid=2, slots=2,
                        device={"id": CPUS[1], "host": "testhost", "kind": "cpu", "index": 1, "name": "CPU",
                                "uuid": None, "memory_total_mb": 1024})
    claimed_gang(db, owner)
    with db.writing() as s:
        assert declare_worker_lost(session=s, worker_id="w1") == []


def test_a_stale_attempt_frees_nothing(db: Database, owner: int) -> None:
    job_id = gang(db, owner)
    attempt = dispatch(db, job_id)
    with db.writing() as s:
        assert not finish_job(session=s, job_id=job_id, attempt=attempt + 5, status=JobStatus.failed,
                              from_statuses=(JobStatus.dispatched, JobStatus.running))
        s.commit()
    assert len(held(db, job_id)) == 2


def test_a_gang_counts_n_times_its_run_time_in_fair_share_and_usage(db: Database, owner: int) -> None:
    end = utcnow()
    with db.writing() as s:
        s.add_all([Device(id=f"gpuhost/cuda:{i}", host="gpuhost", kind="cuda", index=i, name="NVIDIA H100",
                          memory_total_mb=81559, slots=1, state="online") for i in (0, 1)])
        jobs = [Job(owner_id=owner, kind="test-echo", params={}, **request_fields("gpu"), gpus=gpus, timeout_s=600,
                    status=JobStatus.succeeded, device_id="gpuhost/cuda:0", started_at=end - timedelta(seconds=100),
                    finished_at=end) for gpus in (1, 2)]
        s.add_all(jobs)
        s.commit()
        ids = [j.id for j in jobs]
    with db.reading() as s:
        usage = member_usage(session=s, half_life_s=0, now=end)
        shares = [job_usage(s, job_id=i, idle_minutes=10, idle_pct=5, now=end) for i in ids]
        shares = [u.allocated_seconds for u in shares if u is not None]
    assert usage[(owner, "cuda")] == pytest.approx(300.0)  # 100 s alone + 2 × 100 s
    assert shares == pytest.approx([100.0, 200.0])


def test_a_dispatched_gang_whose_other_device_went_offline_goes_back_to_pending(settings: Settings, db: Database,
                                                                                owner: int) -> None:
    job_id = gang(db, owner)
    dispatch(db, job_id)
    with db.writing() as s:
        s.execute(update(Device).where(Device.id == CPUS[1]).values(state=DeviceState.offline))
        s.commit()
    Dispatcher(settings, db=db).reap()  # the leader's device is online: only the allocation tells
    with db.reading() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == JobStatus.pending
        messages = [e.message for e in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id))]
    assert held(db, job_id) == []
    assert any(f"{CPUS[1]} went offline" in (m or "") for m in messages), messages
