"""Where pending jobs start: a pure function of the queue and the devices' free room.

No database and no clock here, so the policy is tested alone (with hypothesis) and a
dispatcher pass is one call. Jobs arrive already in start order; `place` walks them once.

Slots: a job that declared no `gpu_memory_gb` takes a GPU alone. A worker started with
`--slots K` runs up to K jobs that declared memory, fitted against the device's free room:
total − memory used outside gpulab − Σ declared memory of its jobs − one CUDA context per job.
A CPU device runs up to `slots` jobs, memory aside.

Backfill: a job that cannot start reserves the devices it waits for, for the rest of the
pass; a later job may start elsewhere but never on those, so it never delays the head job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.device_request import DeviceRequest

CUDA_CONTEXT_MB = 512  # a CUDA context per job process, outside any memory cap


class WaitReason:
    """Why a pending job waits; one list, shared by /queue, the CLI and the dashboard."""

    PRIORITY = "priority"  # a job ahead of it holds the device it needs
    FAIR_SHARE = "fair_share"
    DEVICE_BUSY = "device_busy"
    DEVICE_OFFLINE = "device_offline"
    DEVICE_DRAINING = "device_draining"
    NO_MEMORY = "no_memory"
    MEMBER_LIMIT = "member_limit"
    DISPATCHER_DOWN = "dispatcher_down"
    NO_DEVICE = "no_device"

    ALL = (PRIORITY, FAIR_SHARE, DEVICE_BUSY, DEVICE_OFFLINE, DEVICE_DRAINING, NO_MEMORY,
           MEMBER_LIMIT, DISPATCHER_DOWN, NO_DEVICE)


@dataclass(frozen=True)
class QueuedJob:
    id: int
    owner_id: int
    request: DeviceRequest
    gpu_memory_gb: float | None = None


@dataclass
class DeviceRoom:
    """A device and what is already placed on it (dispatched and running jobs)."""

    id: str
    kind: str
    name: str = ""
    state: str = "online"
    slots: int = 1
    memory_total_mb: int | None = None
    external_mb: int = 0  # used by processes that are not gpulab's
    jobs: int = 0
    exclusive: bool = False  # a job that declared no memory holds it
    declared_mb: float = 0.0

    def matches(self, request: DeviceRequest) -> bool:
        return request.matches(device_id=self.id, kind=self.kind, name=self.name,
                               memory_total_mb=self.memory_total_mb)

    def free_mb(self) -> float:
        """Room for one more job's declared memory, after CUDA contexts."""
        total = self.memory_total_mb or 0
        return total - self.external_mb - self.declared_mb - CUDA_CONTEXT_MB * (self.jobs + 1)

    def fit(self, job: QueuedJob) -> str | None:
        """None if the job can start here now, else the wait reason."""
        if self.state == "offline":
            return WaitReason.DEVICE_OFFLINE
        if self.state == "draining":
            return WaitReason.DEVICE_DRAINING
        if self.exclusive or self.jobs >= self.slots:
            return WaitReason.DEVICE_BUSY
        if self.kind == "cpu":
            return None
        want_mb = _declared_mb(job)
        if want_mb is None:
            return None if self.jobs == 0 else WaitReason.DEVICE_BUSY
        needed = want_mb
        if job.request.min_memory_gb is not None:
            needed = max(needed, job.request.min_memory_gb * 1024)
        return None if self.free_mb() >= needed else WaitReason.NO_MEMORY

    def take(self, job: QueuedJob) -> None:
        want_mb = _declared_mb(job)
        self.jobs += 1
        if self.kind == "cuda" and want_mb is None:
            self.exclusive = True
        else:
            self.declared_mb += want_mb or 0.0


def _declared_mb(job: QueuedJob) -> float | None:
    return None if job.gpu_memory_gb is None else job.gpu_memory_gb * 1024


@dataclass
class Plan:
    placements: list[tuple[int, str]] = field(default_factory=list)
    waits: dict[int, str] = field(default_factory=dict)


# A reason found on one device outranks another when it says more about the wait.
_REASON_RANK = [WaitReason.NO_MEMORY, WaitReason.DEVICE_BUSY, WaitReason.DEVICE_DRAINING,
                WaitReason.DEVICE_OFFLINE]


def place(jobs: list[QueuedJob], devices: list[DeviceRoom], *, blocked: dict[int, str] | None = None) -> Plan:
    """Place jobs, in the order given, on devices with room; say why each other job waits.

    `blocked` maps job ids that may not start this pass (a member limit, say) to their reason.
    Devices are updated in place as jobs are placed.
    """
    plan = Plan()
    reserved: set[str] = set()
    blocked = blocked or {}
    for job in jobs:
        if job.id in blocked:
            plan.waits[job.id] = blocked[job.id]
            continue
        candidates = [d for d in devices if d.matches(job.request)]
        if not candidates:
            plan.waits[job.id] = WaitReason.NO_DEVICE
            continue
        best: DeviceRoom | None = None
        reasons: list[str] = []
        for device in candidates:
            if device.id in reserved:
                reasons.append(WaitReason.PRIORITY)
                continue
            reason = device.fit(job)
            if reason is None:
                if best is None or _better(device, best):
                    best = device
            else:
                reasons.append(reason)
        if best is not None:
            best.take(job)
            plan.placements.append((job.id, best.id))
            continue
        plan.waits[job.id] = _main_reason(reasons)
        # Hold the devices it waits for (busy ones); offline or draining ones hold nothing.
        reserved.update(d.id for d in candidates if d.state == "online")
    return plan


def _better(a: DeviceRoom, b: DeviceRoom) -> bool:
    """Prefer the emptier device, then the one with more free memory, then the lower id."""
    return (a.jobs, -a.free_mb(), a.id) < (b.jobs, -b.free_mb(), b.id)


def _main_reason(reasons: list[str]) -> str:
    if WaitReason.PRIORITY in reasons and not any(r in (WaitReason.DEVICE_BUSY, WaitReason.NO_MEMORY) for r in reasons):
        return WaitReason.PRIORITY
    for reason in _REASON_RANK:
        if reason in reasons:
            return reason
    return reasons[0] if reasons else WaitReason.NO_DEVICE
