"""Gangs in the placement policy: one host, all N at once, exclusive, held as they free, backfill."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.scheduling.device_request import DeviceRequest
from service.scheduling.placement import place
from service.scheduling.rooms import DeviceRoom, MemberLimits, MemberLoad, QueuedJob, WaitReason

GB = 1024
GPU = DeviceRequest(kind="cuda")


def gpu(device_id: str, **kw) -> DeviceRoom:
    return DeviceRoom(**{"id": device_id, "kind": "cuda", "name": "NVIDIA H100", "memory_total_mb": 80 * GB, **kw})


def host(name: str, n: int, **kw) -> list[DeviceRoom]:
    return [gpu(f"{name}/cuda:{i}", **kw) for i in range(n)]


def job(job_id: int, gpus: int = 1, timeout_s: float = 3600, memory: float | None = None, owner: int = 1,
        request: DeviceRequest = GPU) -> QueuedJob:
    return QueuedJob(id=job_id, owner_id=owner, request=request, gpu_memory_gb=memory, gpus=gpus,
                     timeout_s=timeout_s)


def test_a_gang_takes_n_idle_devices_of_one_host_in_bus_order() -> None:
    devices = host("a", 2) + [gpu(f"b/cuda:{i}") for i in (10, 2, 3, 1)]
    plan = place([job(1, gpus=3)], devices)
    assert plan.placements == [(1, "b/cuda:1")]
    assert plan.allocations == {1: ["b/cuda:1", "b/cuda:2", "b/cuda:3"]}


def test_a_gang_never_spans_hosts() -> None:
    plan = place([job(1, gpus=3)], host("a", 2) + host("b", 2))
    assert plan.placements == [] and plan.waits == {1: WaitReason.DEVICE_BUSY}


def test_gangs_are_exclusive_both_ways() -> None:
    shared = host("a", 2, slots=4)
    shared[0].jobs, shared[0].declared_mb, shared[0].ends_in_s = 1, 4 * GB, 600
    plan = place([job(1, gpus=2)], shared)
    assert plan.waits == {1: WaitReason.ASSEMBLING_GANG} and plan.assembling == {1: (1, 2)}
    devices = host("a", 2, slots=4)
    plan = place([job(1, gpus=2), job(2, memory=1)], devices)
    assert plan.allocations == {1: ["a/cuda:0", "a/cuda:1"]}
    assert 2 in plan.waits  # no slot job beside the gang
    assert all(d.exclusive for d in devices)


def test_a_waiting_gang_holds_free_devices_and_backfill_needs_a_time_limit_that_ends_first() -> None:
    devices = host("a", 4)
    devices[3].jobs, devices[3].exclusive, devices[3].ends_in_s = 1, True, 1000
    plan = place([job(1, gpus=4), job(2, timeout_s=2000), job(3, timeout_s=900)], [*devices])
    assert plan.waits[1] == WaitReason.ASSEMBLING_GANG and plan.assembling[1] == (3, 4)
    assert plan.waits[2] == WaitReason.PRIORITY  # it would still run when the gang could start
    assert plan.placements == [(3, "a/cuda:0")]  # it ends before the gang could start: backfill


def test_a_job_without_a_time_limit_never_backfills() -> None:
    devices = host("a", 2)
    devices[1].jobs, devices[1].exclusive, devices[1].ends_in_s = 1, True, 1000
    plan = place([job(1, gpus=2), job(2, timeout_s=0)], devices)
    assert plan.placements == [] and plan.waits[2] == WaitReason.PRIORITY


def test_a_gang_counts_n_gpus_against_the_member_limit() -> None:
    loads = {1: MemberLoad(jobs=1, gpus=1)}
    plan = place([job(1, gpus=2)], host("a", 4), limits=MemberLimits(max_gpus=2), loads=loads)
    assert plan.waits == {1: WaitReason.MEMBER_LIMIT}
    loads = {1: MemberLoad()}
    plan = place([job(1, gpus=2)], host("a", 4), limits=MemberLimits(max_gpus=2), loads=loads)
    assert plan.allocations[1] == ["a/cuda:0", "a/cuda:1"] and loads[1].gpus == 2


def test_cpu_devices_of_one_host_form_a_gang() -> None:
    cpus = [DeviceRoom(id=f"a/cpu:{i}", kind="cpu", slots=2) for i in (0, 1)]
    plan = place([job(1, gpus=2, request=DeviceRequest(kind="cpu")), job(2, request=DeviceRequest(kind="cpu"))],
                 cpus)
    assert plan.allocations == {1: ["a/cpu:0", "a/cpu:1"]} and 2 in plan.waits


@settings(max_examples=150, deadline=None)
@given(
    running=st.lists(st.tuples(st.integers(1, 50), st.integers(0, 49)), min_size=4, max_size=4),
    stream=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 60), st.integers(1, 60)), max_size=120),
)
def test_a_gang_starts_within_the_time_limits_of_what_ran_when_it_arrived(
    running: list[tuple[int, int]], stream: list[tuple[int, int, int]]
) -> None:
    """Under a random stream of 1-GPU jobs, a 4-GPU job on a 4-GPU host is not starved.

    Each running job has a time limit and a run time within it; new 1-GPU jobs arrive after the
    gang (so they are behind it in line) with their own limits and run times.
    """
    now = 0
    busy: dict[str, tuple[int, int]] = {}  # device → (actual end, limit end)
    for i, (limit, ran) in enumerate(running):
        run = min(ran, limit - 1) + 1
        busy[f"h/cuda:{i}"] = (run, limit)
    bound = sum(limit for limit, _ in running)
    pending: list[QueuedJob] = [job(1, gpus=4, timeout_s=60)]
    arrivals = list(stream)
    runs: dict[int, int] = {}  # job → its run time (within its limit)
    next_id = 2
    while True:
        if arrivals:  # each tick, a few 1-GPU jobs arrive behind the gang
            count, limit, run = arrivals.pop(0)
            for _ in range(count):
                pending.append(job(next_id, timeout_s=limit))
                runs[next_id] = min(run, limit)
                next_id += 1
        rooms = []
        for i in range(4):
            did = f"h/cuda:{i}"
            room = gpu(did)
            if did in busy:
                room.jobs, room.exclusive, room.ends_in_s = 1, True, busy[did][1] - now
            rooms.append(room)
        plan = place(pending, rooms)
        if 1 in plan.allocations:
            break
        assert plan.waits[1] == WaitReason.ASSEMBLING_GANG
        for job_id, device in plan.placements:
            started = next(j for j in pending if j.id == job_id)
            busy[device] = (now + runs[job_id], now + int(started.timeout_s))
            pending.remove(started)
        now += 1
        busy = {d: ends for d, ends in busy.items() if ends[0] > now}
        assert now <= bound, f"the gang still waits at t={now}, past {bound}"
    assert now <= bound
