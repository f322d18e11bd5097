"""The placement policy alone: slots, memory, reasons, fair share, limits, backfill — and its invariants."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from service.scheduling.device_request import DeviceRequest
from service.scheduling.placement import _Pass, place, start_order
from service.scheduling.rooms import CUDA_CONTEXT_MB, DeviceRoom, MemberLimits, MemberLoad, QueuedJob, WaitReason

GB = 1024
GPU = DeviceRequest(kind="cuda")
CPU = DeviceRequest(kind="cpu")


def exact(device_id: str) -> DeviceRequest:
    return DeviceRequest(kind="cpu" if device_id.endswith("/cpu") else "cuda", device_id=device_id)


def gpu(device_id: str = "a/cuda:0", **kw) -> DeviceRoom:
    return DeviceRoom(**{"id": device_id, "kind": "cuda", "name": "NVIDIA H100", "memory_total_mb": 80 * GB,
                         **kw})


def job(job_id: int, request: DeviceRequest = GPU, memory: float | None = None, owner: int = 1, **kw) -> QueuedJob:
    return QueuedJob(id=job_id, owner_id=owner, request=request, gpu_memory_gb=memory, **kw)


# -- one device ------------------------------------------------------------------------------


def test_a_job_that_declared_nothing_takes_the_gpu_alone() -> None:
    plan = place([job(1), job(2, memory=1)], [gpu(slots=4)])
    assert plan.placements == [(1, "a/cuda:0")]
    assert plan.waits == {2: WaitReason.PRIORITY}  # it waits behind job 1, which took the GPU this pass
    plan = place([job(3, memory=1)], [gpu(slots=4, jobs=1, exclusive=True)])
    assert plan.waits == {3: WaitReason.DEVICE_BUSY}
    plan = place([job(4)], [gpu(slots=4, jobs=1, declared_mb=GB)])
    assert plan.waits == {4: WaitReason.DEVICE_BUSY}  # a shared GPU is not a GPU alone


def test_declared_memory_fits_against_capacity_contexts_and_slots() -> None:
    plan = place([job(i, memory=30) for i in range(1, 5)], [gpu(slots=4)])
    # 80 GiB − 2 × 30 GiB − 3 contexts leaves less than 30 GiB for a third job.
    assert [p[0] for p in plan.placements] == [1, 2]
    assert plan.waits == {3: WaitReason.PRIORITY, 4: WaitReason.PRIORITY}
    plan = place([job(1, memory=1), job(2, memory=1), job(3, memory=1)], [gpu(slots=2)])
    assert [p[0] for p in plan.placements] == [1, 2] and 3 in plan.waits
    plan = place([job(1, memory=30)], [gpu(slots=2, jobs=1, declared_mb=50 * GB)])
    assert plan.waits == {1: WaitReason.NO_MEMORY}


def test_memory_used_outside_gpulab_counts() -> None:
    devices = [gpu(slots=2, external_mb=60 * GB)]
    assert place([job(1, memory=30)], devices).waits == {1: WaitReason.NO_MEMORY}
    assert place([job(2, memory=19)], devices).placements == [(2, "a/cuda:0")]
    # A GPU asked for with min_memory_gb needs that much free, even for a job that declared nothing.
    big = DeviceRequest(kind="cuda", min_memory_gb=40)
    assert place([job(3, big)], [gpu(external_mb=60 * GB)]).waits == {3: WaitReason.NO_MEMORY}
    assert place([job(4, big)], [gpu()]).placements == [(4, "a/cuda:0")]


def test_cpu_runs_up_to_its_slots() -> None:
    cpu = DeviceRoom(id="a/cpu", kind="cpu", slots=2)
    plan = place([job(i, CPU) for i in (1, 2, 3)], [cpu])
    assert [p[0] for p in plan.placements] == [1, 2] and plan.waits == {3: WaitReason.PRIORITY}


def test_offline_draining_and_missing_devices_are_reasons() -> None:
    assert place([job(1)], [gpu(state="offline")]).waits == {1: WaitReason.DEVICE_OFFLINE}
    assert place([job(1)], [gpu(state="draining")]).waits == {1: WaitReason.DEVICE_DRAINING}
    assert place([job(1, exact("b/cuda:0"))], [gpu()]).waits == {1: WaitReason.NO_DEVICE}
    assert place([job(1, memory=90)], [gpu()]).waits == {1: WaitReason.NO_MEMORY}
    model = DeviceRequest(kind="cuda", model="A100")
    assert place([job(1, model)], [gpu()]).waits == {1: WaitReason.NO_DEVICE}


def test_exact_device_pins_across_hosts() -> None:
    devices = [gpu("a/cuda:0"), gpu("b/cuda:0"), DeviceRoom(id="b/cpu", kind="cpu")]
    plan = place([job(1, exact("b/cuda:0")), job(2, exact("b/cpu")), job(3)], devices)
    assert plan.placements == [(1, "b/cuda:0"), (2, "b/cpu"), (3, "a/cuda:0")]


def test_the_emptier_device_is_preferred() -> None:
    devices = [gpu("a/cuda:0", slots=2, jobs=1, declared_mb=10 * GB), gpu("a/cuda:1", slots=2)]
    assert place([job(1, memory=5)], devices).placements == [(1, "a/cuda:1")]


# -- order: priority, fair share, age ------------------------------------------------------------


def test_start_order_is_priority_then_usage_then_age() -> None:
    jobs = [job(1, owner=1, usage=50), job(2, owner=2, usage=10), job(3, owner=1, usage=50, priority=5),
            job(4, owner=2, usage=10)]
    assert [j.id for j in start_order(jobs)] == [3, 2, 4, 1]


def test_member_with_less_usage_goes_first_and_the_other_waits_for_fair_share() -> None:
    alice = job(1, owner=1, usage=3600.0)
    bob = job(2, owner=2, usage=60.0)
    plan = place(start_order([alice, bob]), [gpu()])
    assert plan.placements == [(2, "a/cuda:0")]
    assert plan.waits == {1: WaitReason.FAIR_SHARE}
    # Both wait for a busy GPU: bob is next in line, alice waits behind him.
    plan = place(start_order([alice, bob]), [gpu(jobs=1, exclusive=True)])
    assert plan.waits == {2: WaitReason.DEVICE_BUSY, 1: WaitReason.FAIR_SHARE}


def test_higher_priority_goes_first_whatever_the_usage() -> None:
    urgent = job(1, owner=1, usage=1e6, priority=10)
    other = job(2, owner=2, usage=0.0)
    plan = place(start_order([other, urgent]), [gpu()])
    assert plan.placements == [(1, "a/cuda:0")] and plan.waits == {2: WaitReason.PRIORITY}


# -- backfill ------------------------------------------------------------------------------------


def test_backfill_starts_a_later_job_elsewhere_but_never_on_the_head_jobs_device() -> None:
    devices = [gpu("a/cuda:0", jobs=1, exclusive=True), gpu("a/cuda:1")]
    head = job(1, exact("a/cuda:0"))
    anywhere = job(2)
    same = job(3, exact("a/cuda:0"))
    plan = place([head, anywhere, same], devices)
    assert plan.placements == [(2, "a/cuda:1")]
    assert plan.waits == {1: WaitReason.DEVICE_BUSY, 3: WaitReason.PRIORITY}


def test_backfill_does_not_squeeze_into_room_the_head_job_waits_for() -> None:
    devices = [gpu(slots=4, jobs=1, declared_mb=40 * GB)]
    plan = place([job(1, memory=50), job(2, memory=10)], devices)
    assert plan.placements == [] and plan.waits == {1: WaitReason.NO_MEMORY, 2: WaitReason.PRIORITY}


def test_a_gpu_too_small_for_the_job_is_never_held_for_it() -> None:
    devices = [gpu("a/cuda:0", memory_total_mb=16 * GB), gpu("a/cuda:1", jobs=1, exclusive=True)]
    plan = place([job(1, memory=40), job(2, memory=8)], devices)
    assert plan.placements == [(2, "a/cuda:0")] and plan.waits == {1: WaitReason.DEVICE_BUSY}


def test_draining_and_offline_devices_hold_nothing_back() -> None:
    devices = [gpu("a/cuda:0", state="draining"), gpu("a/cuda:1")]
    plan = place([job(1, exact("a/cuda:0")), job(2)], devices)
    assert plan.placements == [(2, "a/cuda:1")]


# -- member limits -------------------------------------------------------------------------------


def test_running_jobs_limit_holds_a_member_back_without_reserving() -> None:
    loads = {1: MemberLoad(jobs=1)}
    plan = place([job(1, owner=1), job(2, owner=2)], [gpu()], limits=MemberLimits(max_jobs=1), loads=loads)
    assert plan.placements == [(2, "a/cuda:0")] and plan.waits == {1: WaitReason.MEMBER_LIMIT}
    # Placements in the same pass count towards the limit.
    plan = place([job(3, CPU), job(4, CPU)], [DeviceRoom(id="a/cpu", kind="cpu", slots=4)],
                 limits=MemberLimits(max_jobs=1))
    assert plan.placements == [(3, "a/cpu")] and plan.waits == {4: WaitReason.MEMBER_LIMIT}


def test_gpu_limit_counts_shares_of_gpus() -> None:
    limits = MemberLimits(max_gpus=1.0)
    devices = [gpu("a/cuda:0", slots=4), gpu("a/cuda:1", slots=4)]
    plan = place([job(1, memory=40), job(2, memory=40), job(3, memory=20)], devices, limits=limits)
    assert [p[0] for p in plan.placements] == [1, 2]  # ½ + ½ GPU
    assert plan.waits == {3: WaitReason.MEMBER_LIMIT}
    plan = place([job(4), job(5)], [gpu("a/cuda:0"), gpu("a/cuda:1")], limits=limits)
    assert plan.placements == [(4, "a/cuda:0")] and plan.waits == {5: WaitReason.MEMBER_LIMIT}


def test_blocked_jobs_keep_their_reason() -> None:
    plan = place([job(1), job(2)], [gpu()], blocked={1: WaitReason.MEMBER_LIMIT})
    assert plan.placements == [(2, "a/cuda:0")] and plan.waits == {1: WaitReason.MEMBER_LIMIT}


# -- invariants over random queues -----------------------------------------------------------------

HOSTS = ("a", "b")


@st.composite
def devices_strategy(draw: st.DrawFn) -> list[DeviceRoom]:
    rooms = []
    for host in HOSTS:
        rooms.append(DeviceRoom(id=f"{host}/cpu", kind="cpu", slots=draw(st.integers(1, 3)),
                                state=draw(st.sampled_from(["online", "online", "offline", "draining"]))))
        for index in range(draw(st.integers(0, 3))):
            total = draw(st.sampled_from([16, 40, 80])) * GB
            slots = draw(st.integers(1, 4))
            busy = draw(st.integers(0, slots))
            exclusive = busy == 1 and draw(st.booleans())
            rooms.append(DeviceRoom(
                id=f"{host}/cuda:{index}", kind="cuda", name=draw(st.sampled_from(["NVIDIA H100", "NVIDIA A100"])),
                state=draw(st.sampled_from(["online", "online", "online", "offline", "draining"])),
                slots=slots, memory_total_mb=total, external_mb=draw(st.sampled_from([0, 0, 2 * GB, 10 * GB])),
                jobs=busy, exclusive=exclusive, declared_mb=0.0 if exclusive else busy * 2.0 * GB,
                ends_in_s=draw(st.sampled_from([30.0, 900.0])) if busy else 0.0,
            ))
    return rooms


REQUESTS = st.sampled_from([
    CPU, GPU, DeviceRequest(kind="cuda", model="H100"), DeviceRequest(kind="cuda", min_memory_gb=30),
    exact("a/cpu"), exact("b/cpu"), exact("a/cuda:0"), exact("b/cuda:1"), exact("a/cuda:2"),
])


@st.composite
def queue_strategy(draw: st.DrawFn, gangs: bool = False) -> list[QueuedJob]:
    """A queue; with `gangs`, some jobs ask for 2 devices and all carry time limits (backfill's bound)."""
    usage = {owner: draw(st.sampled_from([0.0, 10.0, 500.0])) for owner in (1, 2, 3)}
    jobs = []
    for job_id in range(1, draw(st.integers(0, 25)) + 1):
        request = draw(REQUESTS)
        owner = draw(st.sampled_from([1, 2, 3]))
        memory = None if request.kind == "cpu" else draw(st.sampled_from([None, 1.0, 8.0, 20.0, 50.0]))
        gpus = draw(st.sampled_from([1, 1, 2])) if gangs and request.device_id is None else 1
        jobs.append(QueuedJob(id=job_id, owner_id=owner, request=request, gpu_memory_gb=None if gpus > 1 else memory,
                              priority=draw(st.sampled_from([0, 0, 0, 1, -1])), usage=usage[owner], gpus=gpus,
                              timeout_s=draw(st.sampled_from([0.0, 30.0, 600.0])) if gangs else 0.0))
    return start_order(jobs)


LIMITS = st.sampled_from([MemberLimits(), MemberLimits(max_jobs=2), MemberLimits(max_gpus=1.5)])


@settings(max_examples=300, deadline=None)
@given(devices=devices_strategy(), jobs=queue_strategy(), limits=LIMITS)
def test_placement_invariants(devices: list[DeviceRoom], jobs: list[QueuedJob], limits: MemberLimits) -> None:
    before = {d.id: dataclasses.replace(d) for d in devices}
    plan = place(jobs, devices, limits=limits, loads={})
    by_id = {j.id: j for j in jobs}
    placed = dict(plan.placements)

    # Every job has exactly one outcome, and every reason is a known code.
    assert set(placed) | set(plan.waits) == set(by_id) and not set(placed) & set(plan.waits)
    assert set(plan.waits.values()) <= set(WaitReason.ALL)

    for device_id, start in before.items():
        new = [by_id[j] for j, d in plan.placements if d == device_id]
        if not new:
            continue
        # Never on a device that is not online, and never past its slots.
        assert start.state == "online"
        assert start.jobs + len(new) <= start.slots
        if start.kind == "cuda":
            if any(j.gpu_memory_gb is None for j in new):
                # A job that declared nothing holds the GPU alone.
                assert start.jobs == 0 and len(new) == 1
            else:
                # Never more declared memory than the card holds, after outside use and contexts.
                declared = start.declared_mb + sum(j.gpu_memory_gb * GB for j in new)
                contexts = CUDA_CONTEXT_MB * (start.jobs + len(new))
                assert declared + start.external_mb + contexts <= start.memory_total_mb
                assert not start.exclusive

    # Never on a device that does not match the request.
    for job_id, device_id in plan.placements:
        assert before[device_id].matches(by_id[job_id].request)

    # Backfill never delays a job ahead: no later job starts on a device an earlier waiting job could use
    # (unless that job waits for its member's own limit). This is also fair share and priority order.
    order = [j.id for j in jobs]
    for i, job_id in enumerate(order):
        if job_id not in plan.waits or plan.waits[job_id] in (WaitReason.MEMBER_LIMIT, WaitReason.NO_DEVICE):
            continue
        waiting = by_id[job_id]
        wanted = {d for d, room in before.items()
                  if room.state == "online" and room.matches(waiting.request) and room.could_hold(waiting)}
        for later in order[i + 1:]:
            assert placed.get(later) not in wanted, (job_id, later, placed.get(later))

    # The head job starts whenever some device it matches has room for it.
    if jobs:
        head = jobs[0]
        fits = any(room.matches(head.request) and room.fit(head) is None for room in before.values())
        within_gpu_limit = not limits.max_gpus or any(
            room.matches(head.request) and room.fit(head) is None
            and (room.kind != "cuda" or room.share(head) <= limits.max_gpus) for room in before.values())
        assert (head.id in placed) == (fits and within_gpu_limit)

    # Member limits hold.
    for owner in {j.owner_id for j in jobs}:
        mine = [j for j in plan.placements if by_id[j[0]].owner_id == owner]
        if limits.max_jobs:
            assert len(mine) <= limits.max_jobs
        if limits.max_gpus:
            held = sum(before[d].share(by_id[j]) for j, d in mine if before[d].kind == "cuda")
            assert held <= limits.max_gpus + 1e-9


class _NoCache(dict):
    def get(self, key, default=None):  # type: ignore[no-untyped-def]
        return default


@settings(max_examples=200, deadline=None)
@given(devices=devices_strategy(), jobs=queue_strategy(gangs=True), limits=LIMITS)
def test_the_per_pass_cache_changes_no_decision(devices: list[DeviceRoom], jobs: list[QueuedJob],
                                                 limits: MemberLimits) -> None:
    copies = [dataclasses.replace(d) for d in devices]
    cached = place(jobs, devices, limits=limits, loads={})
    uncached = _Pass(copies, limits, {})
    uncached.outlooks = _NoCache()
    uncached.gangs_seen = _NoCache()
    plain = uncached.run(jobs, {})
    assert (cached.placements, cached.waits, cached.assembling) == (plain.placements, plain.waits, plain.assembling)
