"""A page of the queue, as /queue shows it: the database puts the pending jobs in line, and the
plan walks them only as far as the page goes.

At 10,000 pending jobs the whole plan (read every pending job, order them in Python, place
them all) was most of /queue's time, for a page of 500. The start order (`placement.start_key`:
priority, the owner's fair-share usage, age) is written here as SQL, with the usage passed in
as a small table, so the database sorts and returns only the rows up to the page's last entry;
the placement itself is the dispatcher's own (`QueueOrder.plan`), over those rows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Float, Integer, String, bindparam, column, func, literal, select, text
from sqlalchemy.orm import Session

from service.models import Job, JobStatus, utcnow
from service.scheduling.limits import member_limits, member_loads
from service.scheduling.placement import Plan
from service.scheduling.queue_state import PLACEMENT_COLUMNS, QueueOrder, cyclic_gc_paused, device_rooms, usage_cache
from service.settings import Settings


@dataclass
class QueuePage:
    total: int  # pending jobs in the whole queue
    matching: int  # of them, the ones the page was asked for (the reader's own, or all)
    entries: list[tuple[int, Any]]  # (position in the whole queue, row), in start order
    plan: Plan  # placement of every job up to the page's last entry

    def shown(self) -> Iterator[tuple[int, tuple[int, int, str, str, int, int, datetime]]]:
        """(position, (id, owner id, kind, device request, priority, gpus, created)) of each entry,
        by position: a Row's attribute lookups by name cost ~3× an unpacking."""
        for position, (job_id, owner_id, _, _, priority, _, gpus, *_, kind, request, created) in self.entries:
            yield position, (job_id, owner_id, kind, request, priority, gpus, created)


COLUMNS = (*PLACEMENT_COLUMNS, Job.kind, Job.device_request, Job.created_at)  # what a row of the line holds
PENDING_COUNT = select(func.count()).where(Job.status == JobStatus.pending)


@functools.lru_cache(maxsize=64)
def in_line(members: int, sqlite: bool) -> Any:  # a Select of COLUMNS
    """Pending jobs in start order (`placement.start_key` as SQL), for a usage of `members`
    (member, device kind) pairs, bound as parameters `o<i>`, `k<i>`, `s<i>` (`in_line_params`).

    The usage goes in as a VALUES table, so the floats compared are the very ones Python's sort
    compares, and ties fall to the id. Built once per size, so SQLAlchemy compiles it once.
    """
    return _line(members, sqlite, COLUMNS, with_share=False)


# Up to this many entries PostgreSQL sorts the ids alone (`head_of_line`); past it, the join back
# reads the jobs table whole (a hash join, for 10,000 rows of 100,000), and the wide sort is cheaper.
NARROW_PAGE = 1000


@functools.lru_cache(maxsize=64)
def head_of_line(members: int, sqlite: bool, narrow: bool) -> Any:  # a Select of COLUMNS
    """`in_line`'s first `:n` jobs (a parameter), sorted `narrow`ly (ids first, then their columns).

    PostgreSQL sorts the rows it carries: sorting 10,000 rows of every column the page shows
    (device requests, 650 bytes wide) took 17 ms where their ids, priorities and usage took 13;
    the page's columns are then read for its rows alone, by primary key. SQLite keeps the one
    statement: the narrow sort saved it nothing (8.1 against 8.5 ms).
    """
    if not narrow:
        return in_line(members, sqlite).limit(bindparam("n", type_=Integer))
    head = _line(members, sqlite, (Job.id, Job.priority), with_share=True).limit(bindparam("n", type_=Integer))
    ids = head.subquery("head")
    return select(*COLUMNS).join(ids, ids.c.id == Job.id).order_by(ids.c.priority.desc(), ids.c.share, ids.c.id)


def _line(members: int, sqlite: bool, columns: tuple[Any, ...], *, with_share: bool) -> Any:
    """Pending jobs in start order: `columns`, and the usage compared as `share` when asked."""
    if not members:
        line = select(*columns, literal(0.0, Float).label("share")) if with_share else select(*columns)
        return line.where(Job.status == JobStatus.pending).order_by(Job.priority.desc(), Job.id)
    # VALUES as text: SQLAlchemy's values() cannot be cached (it compiled the statement on every
    # call, 5 ms); a VALUES list names its columns column1..3 on both databases.
    rows = ", ".join(f"(:o{i}, :k{i}, :s{i})" for i in range(members))
    shares = text(f"VALUES {rows}").columns(column("column1", Integer), column("column2", String),
                                             column("column3", Float)).cte("shares")
    owner, kind, share = shares.c.column1, shares.c.column2, shares.c.column3
    matching = (owner == Job.owner_id) & (kind == Job.request_kind)
    if sqlite:
        # SQLite scans the 40-odd shares for every pending job in a join (8.3 ms at 10,000 pending);
        # as a subquery only for the rows its sort compares (4.6 ms, as without fair share at all).
        found: Any = select(share).where(matching).scalar_subquery()
        line = select(*columns)
    else:  # PostgreSQL hashes the shares for a join (12 ms); a subquery runs per row (33 ms)
        found = share
        line = select(*columns).select_from(Job.__table__.outerjoin(shares, matching))
    usage = func.coalesce(found, literal(0.0, Float))
    if with_share:
        line = line.add_columns(usage.label("share"))
    return line.where(Job.status == JobStatus.pending).order_by(Job.priority.desc(), usage, Job.id)


def in_line_params(usage: dict[tuple[int, str], float]) -> dict[str, Any]:
    """`in_line`'s parameters for this usage."""
    params: dict[str, Any] = {}
    for i, ((owner, kind), share) in enumerate(usage.items()):
        params[f"o{i}"], params[f"k{i}"], params[f"s{i}"] = owner, str(kind), share
    return params


def queue_page(session: Session, *, settings: Settings, owner_id: int | None, limit: int,
               now: datetime | None = None) -> QueuePage:
    """The first `limit` pending jobs in start order (of `owner_id`'s only, when given, at their
    places in the whole queue), and the plan of every job up to the last of them."""
    now = now or utcnow()
    with cyclic_gc_paused():
        usage = usage_cache(settings).usage(session=session, now=now)
        sqlite = session.get_bind().dialect.name == "sqlite"
        params = in_line_params(usage)
        connection = session.connection()  # Core rows: the ORM would wrap each once more
        if owner_id is None:
            line = head_of_line(len(usage), sqlite, not sqlite and limit <= NARROW_PAGE)
            rows = connection.execute(line, {**params, "n": limit}).all()
            total = connection.execute(PENDING_COUNT).scalar_one()
            entries, matching = list(enumerate(rows, start=1)), total
        else:
            # The reader's places in the whole queue: every pending job in line, of which theirs are picked.
            rows = connection.execute(in_line(len(usage), sqlite), params).all()
            mine = [(position, row) for position, row in enumerate(rows, start=1) if row.owner_id == owner_id]
            total, matching, entries = len(rows), len(mine), mine[:limit]
        through = entries[-1][0] if entries else 0
        limits = member_limits(settings)
        # Members' loads only count against limits: without any, they are not read.
        loads = member_loads(session=session) if limits.max_jobs or limits.max_gpus else {}
        order = QueueOrder(jobs=list(rows[:through]), devices=device_rooms(session, now=now), usage=usage,
                            limits=limits, loads=loads)
        return QueuePage(total=total, matching=matching, entries=entries, plan=order.plan())
