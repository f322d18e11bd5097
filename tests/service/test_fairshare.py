"""Fair share and member limits read from the database, and the queue plan built from them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event

from service.db import Database
from service.errors import LimitExceeded
from service.models import Device, Job, JobStatus, User, utcnow
from service.scheduling.device_request import request_fields
from service.scheduling.fairshare import HORIZON_HALF_LIVES, UsageCache, member_usage
from service.scheduling.limits import check_pending_limit, member_loads
from service.scheduling.queue_state import plan_queue
from service.scheduling.rooms import WaitReason
from service.settings import Settings
from service.store.allocations import allocate

DAY = 24 * 3600.0
HALF_LIFE = 7 * DAY
GB = 1024


@pytest.fixture
def lab(db: Database) -> dict[str, int]:
    with db.writing() as s:
        alice, bob = User(name="alice"), User(name="bob")
        s.add_all([
            alice, bob,
            Device(id="h/cuda:0", host="h", kind="cuda", index=0, name="NVIDIA H100", memory_total_mb=80 * GB,
                   slots=2, state="online"),
            Device(id="h/cpu", host="h", kind="cpu", name="CPU", slots=2, state="online"),
        ])
        s.commit()
        return {"alice": alice.id, "bob": bob.id}


def add_job(db: Database, owner: int, *, status: JobStatus, device: str | None = "h/cuda:0",
            memory: float | None = None, ran_s: float = 0, ended_ago_s: float = 0, request: str = "gpu") -> int:
    now = utcnow()
    finished = None if status in (JobStatus.pending, JobStatus.dispatched, JobStatus.running) else (
        now - timedelta(seconds=ended_ago_s))
    started = None
    if status == JobStatus.running:
        started = now - timedelta(seconds=ran_s)
    elif finished is not None and ran_s:
        started = finished - timedelta(seconds=ran_s)
    with db.writing() as s:
        job = Job(owner_id=owner, kind="test-echo", params={}, **request_fields(request), timeout_s=60,
                  gpu_memory_gb=memory, status=status, device_id=device if status != JobStatus.pending else None,
                  started_at=started, finished_at=finished)
        s.add(job)
        s.flush()
        if device and status in (JobStatus.dispatched, JobStatus.running):
            allocate(s, job_id=job.id, attempt=job.attempt, device_ids=[device])
        s.commit()
        return job.id


def test_usage_is_share_times_run_time_decayed_by_the_half_life(db: Database, lab: dict[str, int]) -> None:
    alice, bob = lab["alice"], lab["bob"]
    add_job(db, alice, status=JobStatus.succeeded, ran_s=100)  # alone on the GPU, just now: 100
    add_job(db, alice, status=JobStatus.failed, ran_s=100, ended_ago_s=HALF_LIFE)  # one half-life ago: 50
    add_job(db, alice, status=JobStatus.succeeded, memory=20, ran_s=100)  # a quarter of the card: 25
    add_job(db, alice, status=JobStatus.succeeded, ran_s=1e6, ended_ago_s=HALF_LIFE * (HORIZON_HALF_LIVES + 1))
    add_job(db, alice, status=JobStatus.cancelled, device=None)  # cancelled before it started: nothing
    add_job(db, bob, status=JobStatus.running, ran_s=40)  # running: counts in full, so far
    add_job(db, bob, status=JobStatus.succeeded, device="h/cpu", ran_s=100)  # one of two CPU slots: 50
    with db.reading() as s:
        usage = member_usage(session=s, half_life_s=HALF_LIFE, now=utcnow())
    assert usage[(alice, "cuda")] == pytest.approx(175, abs=0.5)
    assert usage[(bob, "cuda")] == pytest.approx(40, abs=2)
    assert usage[(bob, "cpu")] == pytest.approx(50, abs=0.5)
    assert (alice, "cpu") not in usage


def test_member_loads_count_jobs_and_gpu_shares(db: Database, lab: dict[str, int]) -> None:
    alice = lab["alice"]
    add_job(db, alice, status=JobStatus.running, memory=40, ran_s=1)
    add_job(db, alice, status=JobStatus.dispatched, memory=20)
    add_job(db, alice, status=JobStatus.running, device="h/cpu", ran_s=1)
    add_job(db, alice, status=JobStatus.succeeded, ran_s=5)
    with db.reading() as s:
        loads = member_loads(session=s)
    assert loads[alice].jobs == 3 and loads[alice].gpus == pytest.approx(0.75)
    assert lab["bob"] not in loads


def test_pending_limit_refuses_with_429_naming_the_limit(db: Database, lab: dict[str, int],
                                                         settings: Settings) -> None:
    limited = settings.model_copy(update={"member_max_pending_jobs": 2})
    for _ in range(2):
        add_job(db, lab["alice"], status=JobStatus.pending)
    with db.reading() as s:
        bob = s.get(User, lab["bob"])
        check_pending_limit(session=s, settings=limited, user=bob)
        check_pending_limit(session=s, settings=settings, user=s.get(User, lab["alice"]))  # 0: unlimited
        with pytest.raises(LimitExceeded) as caught:
            check_pending_limit(session=s, settings=limited, user=s.get(User, lab["alice"]))
    problem = caught.value.problem()
    assert (problem["status"], problem["code"]) == (429, "limit_exceeded")
    assert (problem["field"], problem["value"], problem["pending"]) == ("member_max_pending_jobs", 2, 2)


def test_queue_plan_orders_by_fair_share_and_applies_limits(db: Database, lab: dict[str, int],
                                                            settings: Settings) -> None:
    alice, bob = lab["alice"], lab["bob"]
    add_job(db, alice, status=JobStatus.succeeded, ran_s=3600)
    first = add_job(db, alice, status=JobStatus.pending)
    second = add_job(db, bob, status=JobStatus.pending)
    with db.reading() as s:
        view = plan_queue(s, settings=settings)
    assert [j.id for j in view.jobs] == [second, first]
    assert view.plan.placements == [(second, "h/cuda:0")]
    assert view.plan.waits == {first: WaitReason.FAIR_SHARE}

    limited = settings.model_copy(update={"member_max_running_jobs": 1})
    add_job(db, bob, status=JobStatus.running, device="h/cpu", ran_s=1)
    with db.reading() as s:
        view = plan_queue(s, settings=limited)
    assert view.plan.placements == [(first, "h/cuda:0")]
    assert view.plan.waits == {second: WaitReason.MEMBER_LIMIT}


def test_usage_cache_matches_a_full_read_as_jobs_finish_and_time_passes(db: Database, lab: dict[str, int]) -> None:
    alice, bob = lab["alice"], lab["bob"]
    add_job(db, alice, status=JobStatus.succeeded, ran_s=100, ended_ago_s=DAY)
    add_job(db, bob, status=JobStatus.running, ran_s=50)
    cache = UsageCache(HALF_LIFE)
    now = utcnow()
    with db.reading() as s:
        first = cache.usage(session=s, now=now)
        assert first == pytest.approx(member_usage(session=s, half_life_s=HALF_LIFE, now=now))
    add_job(db, bob, status=JobStatus.succeeded, memory=40, ran_s=200)  # finished since the last read
    later = utcnow() + timedelta(days=3)
    with db.reading() as s:
        again = cache.usage(session=s, now=later)
        assert again == pytest.approx(member_usage(session=s, half_life_s=HALF_LIFE, now=later))
        assert again == pytest.approx(cache.usage(session=s, now=later))  # nothing is counted twice
    assert again[(alice, "cuda")] < first[(alice, "cuda")]


def test_one_members_queue_of_one_kind_is_planned_without_reading_usage(db: Database, lab: dict[str, int],
                                                                         settings: Settings) -> None:
    """Usage orders members against each other: one member's jobs of one kind keep their order
    (priority, then age) without it; a second member, or a second kind, reads it again."""
    alice, bob = lab["alice"], lab["bob"]
    add_job(db, alice, status=JobStatus.succeeded, ran_s=3600)
    first = add_job(db, alice, status=JobStatus.pending)
    second = add_job(db, alice, status=JobStatus.pending)
    sent: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    with db.reading() as s:
        view = plan_queue(s, settings=settings)
    assert [j.id for j in view.jobs] == [first, second] and view.plan.placements[0] == (first, "h/cuda:0")
    assert not any("finished_at >=" in statement for statement in sent)
    on_cpu = add_job(db, alice, status=JobStatus.pending, request="cpu")
    sent.clear()
    with db.reading() as s:
        plan_queue(s, settings=settings)
    assert any("finished_at >=" in statement for statement in sent), "a second kind reads usage"
    with db.writing() as s:
        s.get(Job, on_cpu).status = JobStatus.cancelled
        s.commit()
    bobs = add_job(db, bob, status=JobStatus.pending)
    sent.clear()
    with db.reading() as s:
        view = plan_queue(s, settings=settings)
    assert any("finished_at >=" in statement for statement in sent), "a second member reads usage"
    assert [j.id for j in view.jobs] == [bobs, first, second]  # alice's hour of use puts bob first
