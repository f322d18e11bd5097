"""Where pending jobs start: a pure function of the queue, the devices' free room and members' loads.

No database and no clock here, so the policy is tested alone (with hypothesis) and a
dispatcher pass is one call.

Order: `start_order` sorts by priority (high first), then fair share (the owner's decayed
usage, low first), then age. `place` walks the jobs once in that order.

Whether one job fits one device now (slots, memory, a gang's exclusive hold) is `rooms`' to say;
this module decides who goes first and who holds what for whom.

Backfill: a job that cannot start reserves the devices it waits for, for the rest of the
pass; a later job may start elsewhere but never on those, so it never delays the head job.
A job held back by its member's own limit reserves nothing: one member's limit never stalls
the others.

Gangs: a job asking for `gpus` N > 1 takes N idle devices of one host at once, alone on each
(no slot-sharing job beside a gang, and a gang never beside one). One that cannot start holds
the N devices of the host where it could start soonest (wait reason `assembling_gang`), so it
is never starved by a stream of small jobs; a later job may still use a held device if its
time limit ends before the gang could start (Slurm's backfill rule, with `timeout_s` as the
bound: the gang's start is the time the N-th of those devices frees at the latest).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from service.models import DeviceKind
from service.scheduling.device_request import DeviceRequest
from service.scheduling.outlook import Outlook
from service.scheduling.rooms import DeviceRoom, MemberLimits, MemberLoad, QueuedJob, WaitReason

_EPS = 1e-9


def start_key(priority: int, usage: float, job_id: int) -> tuple[int, float, int]:
    """Where a job stands in line: priority (high first), fair share (low usage first), age."""
    return (-priority, usage, job_id)


def start_order(jobs: Iterable[QueuedJob]) -> list[QueuedJob]:
    """Jobs in the order they start (`start_key`)."""
    return sorted(jobs, key=lambda j: start_key(j.priority, j.usage, j.id))


@dataclass
class Plan:
    placements: list[tuple[int, str]] = field(default_factory=list)  # (job, the device it is sent to)
    waits: dict[int, str] = field(default_factory=dict)
    # Every device each placed job holds, its leader (the one in `placements`) first.
    allocations: dict[int, list[str]] = field(default_factory=dict)
    # A waiting gang: (devices it holds that are free now, devices it needs).
    assembling: dict[int, tuple[int, int]] = field(default_factory=dict)


# When a job waits on several devices for different reasons, the first in this list is shown.
_REASON_RANK = [WaitReason.MEMBER_LIMIT, WaitReason.NO_MEMORY, WaitReason.DEVICE_BUSY, WaitReason.PRIORITY,
                WaitReason.FAIR_SHARE, WaitReason.DEVICE_DRAINING, WaitReason.DEVICE_STALLED,
                WaitReason.DEVICE_OFFLINE]


def place(
    jobs: list[QueuedJob],
    devices: list[DeviceRoom],
    *,
    blocked: dict[int, str] | None = None,
    limits: MemberLimits | None = None,
    loads: dict[int, MemberLoad] | None = None,
) -> Plan:
    """Place jobs, in the order given, on devices with room; say why each other job waits.

    `blocked` maps job ids that may not start this pass to their reason. `loads` holds what
    each member already has (dispatched and running), checked against `limits`. Devices and
    loads are updated in place as jobs are placed.
    """
    return _Pass(devices, limits or MemberLimits(), loads if loads is not None else {}).run(jobs, blocked or {})


class _Pass:
    """One walk over the queue. Its caches are what keeps 10,000 pending jobs fast."""

    def __init__(self, devices: list[DeviceRoom], limits: MemberLimits, loads: dict[int, MemberLoad]):
        self.devices = devices
        self.limits = limits
        self.loads = loads
        self.before = {d.id: dataclasses.replace(d) for d in devices}  # the load at the start
        self.first_in_line: dict[str, QueuedJob] = {}  # device → the first job this pass that took or held it
        self.reserved: set[str] = set()
        # Devices a waiting gang holds → seconds until the gang could start: a later job may
        # use one only if its time limit ends before then.
        self.shadow: dict[str, float] = {}
        self.candidates: dict[tuple[DeviceRequest, float | None], list[DeviceRoom] | str] = {}
        # Bumped at every placement and new hold: what was computed at an older version is stale.
        self.version = 0
        self.outlooks: dict[tuple[object, ...], Outlook] = {}  # per (request, memory[, time limit])
        self.gangs_seen: dict[tuple[object, ...], tuple[int, str, tuple[int, int] | None]] = {}

    def run(self, jobs: list[QueuedJob], blocked: dict[int, str]) -> Plan:
        plan = Plan()
        for job in jobs:
            if job.id in blocked:
                plan.waits[job.id] = blocked[job.id]
                continue
            if job.gpus > 1:
                self.place_gang(job, plan)
                continue
            device_or_reason = self.place_one(job)
            if isinstance(device_or_reason, DeviceRoom):
                plan.placements.append((job.id, device_or_reason.id))
                plan.allocations[job.id] = [device_or_reason.id]
            else:
                plan.waits[job.id] = device_or_reason
        return plan

    def place_gang(self, job: QueuedJob, plan: Plan) -> None:
        """All N devices of one host now, or hold the N where it could start soonest."""
        load = self.loads.setdefault(job.owner_id, MemberLoad())
        cuda = job.request.kind == DeviceKind.cuda
        if (self.limits.max_jobs and load.jobs >= self.limits.max_jobs) or (
                cuda and self.limits.max_gpus and load.gpus + job.gpus > self.limits.max_gpus + _EPS):
            plan.waits[job.id] = WaitReason.MEMBER_LIMIT
            return
        # A gang like one that waited since the last change waits the same way (its owner aside).
        key = (job.request, job.gpu_memory_gb, job.gpus, job.timeout_s if self.shadow else None)
        seen = self.gangs_seen.get(key)
        if seen is not None and seen[0] == self.version:
            self.wait_gang(job, plan, key, seen[1], seen[2])
            return
        candidates = self.candidates.get((job.request, job.gpu_memory_gb))
        if candidates is None:
            candidates = self.candidates[(job.request, job.gpu_memory_gb)] = self.devices_for(job)
        if isinstance(candidates, str):
            self.wait_gang(job, plan, key, candidates)
            return
        hosts: dict[str, list[DeviceRoom]] = {}
        for d in candidates:
            if d.state == "online":
                hosts.setdefault(d.host, []).append(d)
        best: tuple[float, int, str, list[DeviceRoom]] | None = None  # (start in, free now, host, devices)
        for host, devices in hosts.items():
            if len(devices) < job.gpus:
                continue
            # A device a job ahead holds is not ours, unless we would be done before it needs it.
            usable = [d for d in devices if d.id not in self.reserved or self.may_backfill(job, d)]
            if len(usable) < job.gpus:
                continue
            ranked = sorted(usable, key=lambda d: (0.0 if d.jobs == 0 else max(d.ends_in_s, _EPS), _pci_order(d)))
            chosen = ranked[:job.gpus]
            start_in = max(0.0 if d.jobs == 0 else max(d.ends_in_s, _EPS) for d in chosen)
            free = sum(1 for d in chosen if d.jobs == 0)
            option = (start_in, -free, host, chosen)
            if best is None or option[:3] < best[:3]:
                best = option
        if best is None:
            self.wait_gang(job, plan, key, WaitReason.DEVICE_BUSY)
            return
        start_in, _, _, chosen = best
        chosen = sorted(chosen, key=_pci_order)
        if start_in == 0.0:
            for d in chosen:
                d.take(job)
                self.first_in_line.setdefault(d.id, job)
            load.jobs += 1
            if cuda:
                load.gpus += job.gpus
            self.version += 1
            plan.placements.append((job.id, chosen[0].id))
            plan.allocations[job.id] = [d.id for d in chosen]
            return
        version = self.version
        for d in chosen:
            if d.id not in self.reserved:
                self.reserved.add(d.id)
                self.shadow[d.id] = start_in
                self.first_in_line.setdefault(d.id, job)
                self.version += 1  # only a new hold changes what later jobs see
        # One that took new holds is not remembered: the next gang like it finds them taken.
        self.wait_gang(job, plan, key if version == self.version else None, WaitReason.ASSEMBLING_GANG,
                       (sum(1 for d in chosen if d.jobs == 0), job.gpus))

    def wait_gang(self, job: QueuedJob, plan: Plan, key: tuple[object, ...] | None, reason: str,
                  assembling: tuple[int, int] | None = None) -> None:
        plan.waits[job.id] = reason
        if assembling is not None:
            plan.assembling[job.id] = assembling
        if key is not None:
            self.gangs_seen[key] = (self.version, reason, assembling)

    def place_one(self, job: QueuedJob) -> DeviceRoom | str:
        load = self.loads.get(job.owner_id) or self.loads.setdefault(job.owner_id, MemberLoad())
        if self.limits.max_jobs and load.jobs >= self.limits.max_jobs:
            return WaitReason.MEMBER_LIMIT
        # With a gang holding devices, backfill depends on the time limit: then it is in the key.
        key = (job.request, job.gpu_memory_gb, job.timeout_s if self.shadow else None)
        outlook = self.outlooks.get(key)
        if outlook is None or outlook.version != self.version:
            candidates = self.candidates.get((job.request, job.gpu_memory_gb))
            if candidates is None:
                candidates = self.candidates[(job.request, job.gpu_memory_gb)] = self.devices_for(job)
            if isinstance(candidates, str):
                return candidates
            outlook = self.outlooks[key] = self.outlook(job, candidates)
        best: DeviceRoom | None = None
        limited = False
        for device in outlook.open:
            if self.limits.max_gpus and device.kind == DeviceKind.cuda and (
                    load.gpus + device.share(job) > self.limits.max_gpus + _EPS):
                limited = True
            elif best is None or _better(device, best):
                best = device
        if best is not None:
            self.first_in_line.setdefault(best.id, job)
            load.jobs += 1
            if best.kind == DeviceKind.cuda:
                load.gpus += best.share(job)
            best.take(job)
            self.version += 1
            return best
        reason = WaitReason.MEMBER_LIMIT if limited else outlook.reason(job)
        if reason != WaitReason.MEMBER_LIMIT:
            # Hold the devices it waits for (online ones); offline or draining ones hold nothing.
            for d in outlook.to_hold:
                if d.id not in self.reserved:
                    self.reserved.add(d.id)
                    self.first_in_line.setdefault(d.id, job)
                    self.version += 1
        return reason

    def devices_for(self, job: QueuedJob) -> list[DeviceRoom] | str:
        """The devices that could ever run the job, or the reason there are none."""
        matching = [d for d in self.devices if d.matches(job.request)]
        if not matching:
            return WaitReason.NO_DEVICE
        able = [d for d in matching if d.could_hold(job)]
        return able or WaitReason.NO_MEMORY

    def outlook(self, job: QueuedJob, candidates: list[DeviceRoom]) -> Outlook:
        """What a job like this one meets on each of its devices now, its owner aside."""
        open_: list[DeviceRoom] = []
        reasons: set[str] = set()
        ahead: list[QueuedJob] = []
        for device in candidates:
            if device.id in self.reserved and not self.may_backfill(job, device):
                ahead.append(self.first_in_line[device.id])
                continue
            reason = device.fit(job)
            if reason is None:
                open_.append(device)
            # Taken during this pass: had it room before, the job waits behind whoever took it.
            elif (reason in (WaitReason.DEVICE_BUSY, WaitReason.NO_MEMORY) and device.id in self.first_in_line
                  and self.before[device.id].fit(job) is None):
                ahead.append(self.first_in_line[device.id])
            else:
                reasons.add(reason)
        return Outlook(version=self.version, open=open_, reasons=reasons, main=_main_reason(reasons),
                        to_hold=[d for d in candidates if d.state == "online" and d.id not in self.reserved],
                        ahead_owners={a.owner_id for a in ahead}, ahead_priorities={a.priority for a in ahead},
                        ahead_max_usage=max((a.usage for a in ahead), default=None))

    def may_backfill(self, job: QueuedJob, device: DeviceRoom) -> bool:
        """Whether a job may use a device a waiting gang holds: its time limit ends before the gang starts."""
        shadow = self.shadow.get(device.id)
        return shadow is not None and 0 < job.timeout_s <= shadow


def _pci_order(d: DeviceRoom) -> tuple[str, int, str]:
    """cuda:2 before cuda:10: a gang's devices in bus order, its leader the first."""
    local = d.id.rpartition("/")[2]
    kind, _, index = local.partition(":")
    return (kind, int(index) if index.isdigit() else -1, d.id)


def _better(a: DeviceRoom, b: DeviceRoom) -> bool:
    """Prefer the emptier device, then the one with more free memory, then the lower id."""
    return (a.jobs, -a.free_mb(), a.id) < (b.jobs, -b.free_mb(), b.id)


def _main_reason(reasons: set[str]) -> str:
    for reason in _REASON_RANK:
        if reason in reasons:
            return reason
    return next(iter(reasons)) if reasons else WaitReason.NO_DEVICE
