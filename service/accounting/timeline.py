"""The queue over time: how many jobs waited and ran, and how long they waited, step by step.

`/usage/timeline` and the dashboard's queue chart read it; it counts jobs, not device-hours
(those are `usage`'s).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.models import Job, utcnow


@dataclass
class TimelinePoint:
    t: datetime
    queue_depth: int
    running: int
    started: int
    mean_wait_s: float | None
    # Within the step, not at its end: 4 jobs queued for 85 s show in a 24 h view's 24 min steps.
    queue_depth_max: int = 0
    queue_depth_mean: float = 0.0
    running_max: int = 0
    running_mean: float = 0.0


class _StepFunction:
    """How many intervals [start, end) cover each instant, swept forward one step at a time."""

    def __init__(self, intervals: list[tuple[datetime, datetime | None]], since: datetime):
        changes: dict[datetime, int] = {}
        for start, end in intervals:
            changes[start] = changes.get(start, 0) + 1
            if end is not None:
                changes[end] = changes.get(end, 0) - 1
        # Changes at one instant apply together: a job that starts as it is created never queues.
        self.times = sorted(t for t, d in changes.items() if d)
        self.deltas = [changes[t] for t in self.times]
        self.i = bisect.bisect_right(self.times, since)
        self.value = sum(self.deltas[:self.i])

    def step(self, t0: datetime, t1: datetime) -> tuple[int, float, int]:
        """(value at t1, time-weighted mean over [t0, t1], maximum over [t0, t1])."""
        highest, area, last = self.value, 0.0, t0
        while self.i < len(self.times) and self.times[self.i] <= t1:
            at = self.times[self.i]
            area += self.value * (at - last).total_seconds()
            self.value += self.deltas[self.i]
            highest = max(highest, self.value)
            last = at
            self.i += 1
        area += self.value * (t1 - last).total_seconds()
        width = (t1 - t0).total_seconds()
        return self.value, (area / width if width > 0 else float(self.value)), highest


def queue_timeline(session: Session, *, since: datetime, step_s: float, now: datetime | None = None
                   ) -> list[TimelinePoint]:
    """Per step: queue depth and running jobs at its end, their mean and maximum within it,
    and the mean wait of the jobs that started in it."""
    now = now or utcnow()
    jobs = session.execute(
        select(Job.created_at, Job.started_at, Job.finished_at)
        .where(Job.created_at <= now,
               or_(Job.finished_at.is_(None), Job.finished_at >= since, Job.started_at >= since))
    ).all()
    queued = _StepFunction([(j.created_at, j.started_at or j.finished_at) for j in jobs], since)
    running = _StepFunction([(j.started_at, j.finished_at) for j in jobs if j.started_at is not None], since)
    starts = sorted((j.started_at, (j.started_at - j.created_at).total_seconds()) for j in jobs
                    if j.started_at is not None and j.started_at >= since)
    points = []
    t0, k = since, 0
    while t0 < now:
        t1 = min(t0 + timedelta(seconds=step_s), now)
        depth, depth_mean, depth_max = queued.step(t0, t1)
        run, run_mean, run_max = running.step(t0, t1)
        waits = []
        while k < len(starts) and starts[k][0] < t1:
            waits.append(starts[k][1])
            k += 1
        points.append(TimelinePoint(t=t1, queue_depth=depth, running=run, started=len(waits),
                                    mean_wait_s=sum(waits) / len(waits) if waits else None,
                                    queue_depth_max=depth_max, queue_depth_mean=round(depth_mean, 3),
                                    running_max=run_max, running_mean=round(run_mean, 3)))
        t0 = t1
    return points
