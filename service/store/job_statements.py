"""The fixed statements of a job's lifecycle, built once (`store.jobs` runs them).

A worker's claim, its finish and the next job's dispatch run the same few statements every
job. Building one in SQLAlchemy (coercing each operand, then its cache key) cost more CPU
than running it, and an ORM-enabled UPDATE then compared its criteria against the session's
objects: built once on the table, with parameters for what changes, a job pays for neither
(see docs/design.md, "A job's statements are built once, and its finish loads nothing").
Parameters are named `p_<...>`: one may not take the name of a column the statement sets.
"""

from __future__ import annotations

from functools import cache
from typing import Any, cast

from sqlalchemy import Select, Table, Update, bindparam, select, update

from service.models import Job, JobStatus

JOBS = cast(Table, Job.__table__)


def bound(name: str, column: str | None = None) -> Any:
    """A parameter `p_<name>` for a value of `column` (default `name`), typed as that column."""
    return bindparam(f"p_{name}", type_=JOBS.c[column or name].type)


@cache
def transition(columns: tuple[str, ...], from_statuses: int, unless_cancelled: bool = False) -> Update:
    """A move's conditional UPDATE: sets `columns` (p_<column>) and advances the event counter by
    p_numbers, where the job p_id is on attempt p_fence in status p_from (one, or a list of several)
    and, `unless_cancelled`, nobody asked to cancel it."""
    status = (JOBS.c.status == bound("from", "status") if from_statuses == 1
              else JOBS.c.status.in_(bindparam("p_from", expanding=True)))
    fence = [JOBS.c.id == bound("id"), status, JOBS.c.attempt == bound("fence", "attempt")]
    if unless_cancelled:
        fence.append(JOBS.c.cancel_requested_at.is_(None))
    return (update(JOBS).where(*fence)
            .values({**{c: bound(c) for c in columns}, "event_seq": JOBS.c.event_seq + bound("numbers", "event_seq")})
            .returning(JOBS.c.event_seq, JOBS.c.attempt))


# The claim's UPDATE returns these: the worker runs the job from them, with no read after it.
_CLAIMED = (JOBS.c.event_seq, JOBS.c.kind, JOBS.c.params, JOBS.c.seed, JOBS.c.gpu_memory_gb, JOBS.c.started_at)
# dispatched → running for p_device_id's p_fence attempt, by p_worker_id's process p_pid.
CLAIM: Update = (
    update(JOBS)
    .where(JOBS.c.id == bound("id"), JOBS.c.status == JobStatus.dispatched,
           JOBS.c.attempt == bound("fence", "attempt"), JOBS.c.device_id == bound("device_id"))
    .values(status=JobStatus.running, started_at=bound("started_at"), worker_id=bound("worker_id"),
            pid=bound("pid"), runs=JOBS.c.runs + 1, event_seq=JOBS.c.event_seq + 1)
    .returning(*_CLAIMED)
)
# The same columns of a job this process claimed already (a retry after a commit whose answer was lost).
CLAIMED_BEFORE: Select[Any] = select(*_CLAIMED).where(
    JOBS.c.id == bound("id"), JOBS.c.status == JobStatus.running, JOBS.c.attempt == bound("fence", "attempt"),
    JOBS.c.worker_id == bound("worker_id"), JOBS.c.pid == bound("pid"))
# Whether a job's cancel was asked for.
CANCEL_REQUESTED: Select[Any] = select(JOBS.c.cancel_requested_at).where(JOBS.c.id == bound("id"))
