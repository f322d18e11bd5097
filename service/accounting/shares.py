"""How much of a device a job holds: the one function behind fair share, usage and the dashboard.

A job's share of its device is 1 when it holds a GPU alone (it declared no memory), its
declared memory over the card's total when it shares one, and 1/slots on a CPU device.
Allocated device-seconds = share × run time. Used GPU-seconds = the device's measured
utilisation × the share: per-process utilisation does not exist on a shared card.
"""

from __future__ import annotations

import math
from datetime import datetime

from service.models import DeviceKind


def device_share(*, device_kind: str, slots: int, memory_total_mb: int | None, gpu_memory_gb: float | None) -> float:
    """The fraction of its device that one job holds, in (0, 1]."""
    if device_kind != DeviceKind.cuda:
        return 1.0 / max(1, slots)
    if gpu_memory_gb is None or not memory_total_mb:
        return 1.0
    return min(1.0, gpu_memory_gb * 1024 / memory_total_mb)


def run_seconds(started_at: datetime | None, finished_at: datetime | None, now: datetime) -> float:
    """How long a job has held its device (so far, for a running one)."""
    if started_at is None:
        return 0.0
    return max(0.0, ((finished_at or now) - started_at).total_seconds())


def allocated_seconds(*, share: float, started_at: datetime | None, finished_at: datetime | None,
                      now: datetime) -> float:
    """Device-seconds a job was allocated: its share × its run time."""
    return share * run_seconds(started_at, finished_at, now)


def decay_weight(*, ended_at: datetime, now: datetime, half_life_s: float) -> float:
    """How much usage that ended at `ended_at` still counts now (1 now, ½ one half-life ago)."""
    age = max(0.0, (now - ended_at).total_seconds())
    return math.pow(0.5, age / half_life_s) if half_life_s > 0 else 1.0
