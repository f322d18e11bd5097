"""What a device has room for, and what a queued job needs: the facts placement decides on.

Slots: a job that declared no `gpu_memory_gb` takes a GPU alone. A worker started with
`--slots K` runs up to K jobs that declared memory, fitted against the device's free room:
total − memory used outside gpulab − Σ declared memory of its jobs − one CUDA context per job.
A CPU device runs up to `slots` jobs, memory aside. A gang holds each of its devices alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from service.accounting.shares import device_share
from service.models import DeviceKind
from service.scheduling.device_request import DeviceRequest

CUDA_CONTEXT_MB = 512  # a CUDA context per job process, outside any memory cap


class WaitReason:
    """Why a pending job waits; one list, shared by /queue, the CLI and the dashboard."""

    PRIORITY = "priority"  # a job ahead of it in line (higher priority, or older) goes first
    FAIR_SHARE = "fair_share"  # another member with less recent usage goes first on that device
    DEVICE_BUSY = "device_busy"
    DEVICE_OFFLINE = "device_offline"
    DEVICE_DRAINING = "device_draining"
    DEVICE_STALLED = "device_stalled"  # its worker does not consume its queue (being restarted)
    NO_MEMORY = "no_memory"
    MEMBER_LIMIT = "member_limit"
    DISPATCHER_DOWN = "dispatcher_down"
    NO_DEVICE = "no_device"
    ASSEMBLING_GANG = "assembling_gang"  # a multi-device job holding devices as they free

    ALL = (PRIORITY, FAIR_SHARE, DEVICE_BUSY, DEVICE_OFFLINE, DEVICE_DRAINING, DEVICE_STALLED, NO_MEMORY,
           MEMBER_LIMIT, DISPATCHER_DOWN, NO_DEVICE, ASSEMBLING_GANG)


class QueuedJob(NamedTuple):
    """A pending job as placement sees it. A tuple, not a dataclass: a pass builds 10,000 of them
    and a tuple is built in a third of a frozen dataclass's time."""

    id: int
    owner_id: int
    request: DeviceRequest
    gpu_memory_gb: float | None = None
    priority: int = 0
    usage: float = 0.0  # the owner's decayed device-seconds on this kind of device
    gpus: int = 1  # devices of one host it needs at once (a gang when above 1)
    timeout_s: float = 0.0  # its time limit: the bound backfill uses


@dataclass(frozen=True)
class MemberLimits:
    """Per-member caps; 0 means unlimited."""

    max_jobs: int = 0  # dispatched and running jobs
    max_gpus: float = 0.0  # Σ of the member's shares of GPUs (a job alone on a GPU holds 1)


@dataclass
class MemberLoad:
    jobs: int = 0
    gpus: float = 0.0


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
    exclusive: bool = False  # a job that declared no memory holds it, or a gang
    declared_mb: float = 0.0
    ends_in_s: float = 0.0  # when the last job placed here reaches its time limit, from now

    @property
    def host(self) -> str:
        return self.id.rpartition("/")[0]

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
        if self.state == "stalled":
            return WaitReason.DEVICE_STALLED
        if self.exclusive or self.jobs >= self.slots:
            return WaitReason.DEVICE_BUSY
        if self.kind == DeviceKind.cpu:
            return None
        want_mb = _declared_mb(job)
        if want_mb is None and self.jobs > 0:
            return WaitReason.DEVICE_BUSY  # it needs the GPU alone
        return None if self.free_mb() >= _needed_mb(job) else WaitReason.NO_MEMORY

    def could_hold(self, job: QueuedJob) -> bool:
        """Whether the job would fit here on an empty device (else waiting for it is pointless)."""
        if self.kind != DeviceKind.cuda:
            return True
        return (self.memory_total_mb or 0) - CUDA_CONTEXT_MB >= _needed_mb(job)

    def share(self, job: QueuedJob) -> float:
        """The fraction of this device the job would hold (accounting's rule)."""
        return device_share(device_kind=self.kind, slots=self.slots, memory_total_mb=self.memory_total_mb,
                            gpu_memory_gb=job.gpu_memory_gb)

    def take(self, job: QueuedJob) -> None:
        want_mb = _declared_mb(job)
        self.jobs += 1
        self.ends_in_s = max(self.ends_in_s, job.timeout_s)
        if job.gpus > 1 or (self.kind == DeviceKind.cuda and want_mb is None):
            self.exclusive = True
        else:
            self.declared_mb += want_mb or 0.0


def _declared_mb(job: QueuedJob) -> float | None:
    return None if job.gpu_memory_gb is None else job.gpu_memory_gb * 1024


def _needed_mb(job: QueuedJob) -> float:
    """Free memory a GPU needs for the job: its declared memory, or the request's minimum."""
    needed = job.gpu_memory_gb or 0.0
    if job.request.min_memory_gb is not None:
        needed = max(needed, job.request.min_memory_gb)
    return needed * 1024
