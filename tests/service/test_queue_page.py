"""A page of /queue is the head of the dispatcher's whole plan: the same jobs at the same places,
with the same wait reasons and next devices, though the database puts them in line and the
plan walks no further than the page's last entry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from service.db import Database
from service.models import Device, Job, JobStatus, User, utcnow
from service.scheduling.device_request import request_fields
from service.scheduling.placement import Plan
from service.scheduling.queue_page import NARROW_PAGE, queue_page
from service.scheduling.queue_state import plan_queue
from service.scheduling.rooms import WaitReason
from service.settings import Settings

GB = 1024


# The pending queue, oldest first: (owner, request, declared GiB, GPUs, priority).
QUEUE = [("ann", "gpu", 30, 1, 0), ("bob", "gpu", None, 1, 0), ("cat", "gpu", None, 4, 1), ("cat", "gpu", 30, 1, 0),
         ("ann", "gpu", 70, 1, 0), ("bob", "cpu", None, 1, 0), ("cat", "cpu", None, 1, 0), ("cat", "gpu", 30, 1, 0),
         ("bob", "gpu", 30, 1, 0), ("ann", "gpu", None, 1, 1), ("cat", "gpu", None, 1, 0), ("bob", "gpu", 90, 1, 0),
         ("ann", "cpu", None, 1, 0), ("bob", "gpu", None, 2, 0), ("cat", "gpu", 20, 1, 1), ("ann", "gpu", 30, 1, 0)]


@pytest.fixture
def lab(db: Database) -> dict[str, int]:
    """Three members with different recent use, four GPUs of two slots and a CPU, and a queue of
    jobs alone on a GPU, jobs that declare memory, gangs and CPU jobs at two priorities."""
    now = utcnow()
    with db.writing() as s:
        users = {name: User(name=name) for name in ("ann", "bob", "cat")}
        s.add_all(users.values())
        s.add_all([Device(id=f"h/cuda:{i}", host="h", kind="cuda", index=i, name="NVIDIA H100",
                          memory_total_mb=80 * GB, slots=2, state="online") for i in range(4)]
                  + [Device(id="h/cpu", host="h", kind="cpu", name="CPU", slots=1, state="online")])
        s.flush()
        # Recent use, far apart so that the order cannot turn on a rounding: cat most, ann least.
        for name, request, hours in (("cat", "gpu", 9), ("bob", "gpu", 3), ("ann", "gpu", 1), ("cat", "cpu", 2)):
            s.add(Job(owner_id=users[name].id, kind="test-echo", params={}, **request_fields(request), timeout_s=60,
                      status=JobStatus.succeeded, device_id="h/cuda:0" if request == "gpu" else "h/cpu",
                      started_at=now - timedelta(hours=hours + 1), finished_at=now - timedelta(hours=1)))
        for i, (name, request, memory, gpus, priority) in enumerate(QUEUE):
            s.add(Job(owner_id=users[name].id, kind="test-echo", params={}, **request_fields(request),
                      gpu_memory_gb=memory, gpus=gpus, priority=priority, timeout_s=60 * (i + 1),
                      status=JobStatus.pending, created_at=now - timedelta(minutes=60 - i)))
        s.commit()
        return {name: user.id for name, user in users.items()}


def shown(plan: Plan, job_id: int) -> tuple[Any, ...]:
    """What /queue shows of a job's plan: its reason, next device, devices, gang progress."""
    return (plan.waits.get(job_id), dict(plan.placements).get(job_id), plan.allocations.get(job_id),
            plan.assembling.get(job_id))


@pytest.mark.parametrize("limit_members", [False, True], ids=["no-limits", "member-limits"])
def test_a_page_is_the_head_of_the_whole_plan(db: Database, settings: Settings, lab: dict[str, int],
                                              limit_members: bool) -> None:
    settings = settings.model_copy(update={"member_max_running_jobs": 2} if limit_members else {})
    with db.reading() as s:
        whole = plan_queue(s, settings=settings)
    ids = [j.id for j in whole.jobs]
    reasons = set(whole.plan.waits.values())
    assert {WaitReason.FAIR_SHARE, WaitReason.PRIORITY, WaitReason.ASSEMBLING_GANG} <= reasons
    assert (WaitReason.MEMBER_LIMIT in reasons) == limit_members
    assert whole.plan.placements, "some jobs start now, so later ones wait behind them"
    # Past NARROW_PAGE, PostgreSQL sorts the page's rows whole rather than their ids: both forms are checked.
    for limit in (1, 5, 13, len(ids), 500, NARROW_PAGE + 1):
        with db.reading() as s:
            page = queue_page(s, settings=settings, owner_id=None, limit=limit)
        head = ids[:limit]
        assert [(position, row.id) for position, row in page.entries] == list(enumerate(head, start=1))
        assert (page.total, page.matching) == (len(ids), len(ids))
        assert [shown(page.plan, i) for i in head] == [shown(whole.plan, i) for i in head]
        # Nothing behind the page was walked: the plan placed or held back the page's jobs alone.
        assert set(page.plan.waits) | {j for j, _ in page.plan.placements} == set(head)


@pytest.mark.parametrize("member", ["ann", "cat"])
def test_a_members_page_keeps_their_places_in_the_whole_queue(db: Database, settings: Settings,
                                                              lab: dict[str, int], member: str) -> None:
    owner = lab[member]
    with db.reading() as s:
        whole = plan_queue(s, settings=settings)
    theirs = [(position, j.id) for position, j in enumerate(whole.jobs, start=1) if j.owner_id == owner]
    assert theirs[0][0] > 1 or member == "ann"  # cat, who used most, is not at the head
    for limit in (1, 4, 500):
        with db.reading() as s:
            page = queue_page(s, settings=settings, owner_id=owner, limit=limit)
        assert [(position, row.id) for position, row in page.entries] == theirs[:limit]
        assert (page.total, page.matching) == (len(whole.jobs), len(theirs))
        assert [shown(page.plan, i) for _, i in theirs[:limit]] == [shown(whole.plan, i) for _, i in theirs[:limit]]


def test_an_empty_queue_is_an_empty_page(db: Database, settings: Settings, lab: dict[str, int]) -> None:
    with db.writing() as s:
        for job in s.query(Job).filter(Job.status == JobStatus.pending):
            job.status = JobStatus.cancelled
        s.commit()
    with db.reading() as s:
        page = queue_page(s, settings=settings, owner_id=None, limit=10)
        mine = queue_page(s, settings=settings, owner_id=lab["ann"], limit=10)
    assert (page.total, page.matching, page.entries, page.plan.waits) == (0, 0, [], {})
    assert (mine.total, mine.matching, mine.entries) == (0, 0, [])
