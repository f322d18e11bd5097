"""A pass's per-class cache: what every job of one class meets on its devices at one version.

A class is the jobs with one request, one declared memory and (while a gang holds devices) one
time limit; at 10,000 pending jobs they number a few hundred, so placement works out each
class's devices once per change of the pass instead of once per job.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.scheduling.rooms import DeviceRoom, QueuedJob, WaitReason


@dataclass
class Outlook:
    """What every job of one class (request, memory, time limit) meets on its devices at one version.

    Only the owner differs between them: the member limit, checked on the open devices, and
    whether it waits for priority or fair share behind the jobs ahead of it on the others.
    """

    version: int
    open: list[DeviceRoom]  # where it may start now, member limits aside
    reasons: set[str]  # why the devices neither open nor taken by a job ahead cannot take it
    main: str  # the reason shown from those alone
    to_hold: list[DeviceRoom]  # online devices nobody holds yet: a waiting job holds them
    ahead_owners: set[int]
    ahead_priorities: set[int]
    ahead_max_usage: float | None  # None: no job ahead of it holds one of its devices

    def reason(self, job: QueuedJob) -> str:
        """Why the job waits (member limits aside), ranked as placement ranks reasons.

        Behind a job ahead: fair share when every job ahead is another member's, of its priority,
        with less usage, else priority; a busy or full device outranks both.
        """
        if self.ahead_max_usage is None or self.main in (WaitReason.NO_MEMORY, WaitReason.DEVICE_BUSY):
            return self.main
        if (job.owner_id in self.ahead_owners or self.ahead_priorities != {job.priority}
                or self.ahead_max_usage >= job.usage):
            return WaitReason.PRIORITY
        return WaitReason.FAIR_SHARE
