"""Job events (log lines, progress, metrics, status changes), metrics and artifacts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from service.live import job_channel, queue_publish
from service.models import Artifact, Job, JobEvent, JobMetric, utcnow

# Built once: every job's claim, finish and log flush runs these, and building a statement
# (coercions, then its cache key) cost more than running it. Core, not the ORM's bulk insert:
# nothing is loaded from these rows (a third of the cost).
_JOBS = cast(Table, Job.__table__)
_INSERT_EVENTS = insert(cast(Table, JobEvent.__table__))
_INSERT_METRICS = insert(cast(Table, JobMetric.__table__))
_NUMBER = (update(_JOBS).where(_JOBS.c.id == bindparam("p_id"))
           .values(event_seq=_JOBS.c.event_seq + bindparam("p_count")).returning(_JOBS.c.event_seq))
_NUMBER_FENCED = _NUMBER.where(_JOBS.c.attempt == bindparam("p_attempt"))


def storable(text: str) -> str:
    """Text as every database stores it: NUL shown as \\x00, lone surrogates as \\udXXX.

    PostgreSQL refuses NUL in text and JSON, and UTF-8 cannot encode a lone surrogate; jobs,
    their errors and member code produce both. Escaping keeps what was said, readable.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def storable_json(value: Any) -> Any:
    """A JSON value with every string (and key) storable, and non-finite numbers as null."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): storable_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; PostgreSQL refuses it
    return value


def append_events(
    session: Session, *, job_id: int, events: Sequence[dict[str, Any]], attempt: int | None = None,
    numbered_to: int | None = None,
) -> list[dict[str, Any]]:
    """Add events to a job in order, inside the caller's transaction; publish after commit.

    Each event is {"type", "message", "data"}. Sequence numbers are taken with one
    conditional UPDATE of the job's counter, so writers never collide; with `attempt`, a
    stale attempt's events are refused (returns []). `numbered_to`: the caller's own UPDATE
    already advanced the counter by len(events), to this value (a state change: one statement).
    """
    if not events:
        return []
    last = numbered_to
    if last is None:
        last = session.execute(
            _NUMBER if attempt is None else _NUMBER_FENCED,
            {"p_id": job_id, "p_count": len(events), "p_attempt": attempt},
        ).scalar_one_or_none()
    if last is None:
        return []
    now = utcnow()
    rows = []
    for i, ev in enumerate(events):
        rows.append(
            {
                "job_id": job_id,
                "seq": last - len(events) + 1 + i,
                "attempt": attempt or 0,
                "type": ev["type"],
                "message": storable(str(ev.get("message", ""))),
                "data": storable_json(ev.get("data")),
                "created_at": ev.get("created_at", now),
            }
        )
    session.execute(_INSERT_EVENTS, rows)
    metrics = [
        {
            "job_id": job_id,
            "attempt": attempt or 0,
            "name": str(r["data"]["name"])[:100],
            "step": r["data"].get("step"),
            "value": r["data"]["value"],
            "created_at": r["created_at"],
        }
        for r in rows
        # A non-finite value (a diverging loss) stays in the event, as null; the metrics
        # table holds numbers only.
        if r["type"] == "metric" and r["data"].get("value") is not None
    ]
    if metrics:
        session.execute(_INSERT_METRICS, metrics)
    published = [event_public(r) for r in rows]
    queue_publish(session, job_channel(job_id), published)
    return published


def append_first_events(session: Session, *, job_ids: Sequence[int], event: dict[str, Any]) -> None:
    """The same event as number 1 of each new job (their INSERT set the counter): one statement."""
    if len(job_ids) == 1:
        append_events(session, job_id=job_ids[0], events=[event], numbered_to=1)
        return
    now = utcnow()
    rows = [{"job_id": job_id, "seq": 1, "attempt": 0, "type": event["type"], "message": storable(event["message"]),
             "data": storable_json(event.get("data")), "created_at": now} for job_id in job_ids]
    session.execute(_INSERT_EVENTS, rows)
    for row in rows:
        queue_publish(session, job_channel(row["job_id"]), [event_public(row)])


def event_public(row: dict[str, Any] | JobEvent) -> dict[str, Any]:
    """An event as the API shows it."""
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
    created = get("created_at")
    return {
        "seq": get("seq"),
        "attempt": get("attempt"),
        "type": get("type"),
        "message": get("message"),
        "data": get("data"),
        "created_at": created.isoformat() if created else None,
    }


def status_event(status: str, reason: str | None = None, message: str = "") -> dict[str, Any]:
    """The event that records a job's move to `status`."""
    return {"type": "status", "message": message or status, "data": {"status": status, "reason": reason}}


def record_events(
    *, session: Session, job_id: int, attempt: int, events: Sequence[dict[str, Any]]
) -> int:
    """Commit one batch of a running attempt's events; returns how many were kept."""
    kept = append_events(session, job_id=job_id, events=events, attempt=attempt)
    session.commit()
    return len(kept)


def list_events(
    *, session: Session, job_id: int, after_seq: int = 0, limit: int = 1000, types: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """A job's events after `after_seq`, in order."""
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after_seq)
    if types:
        stmt = stmt.where(JobEvent.type.in_(types))
    rows = session.scalars(stmt.order_by(JobEvent.seq).limit(limit))
    return [event_public(r) for r in rows]


def list_metrics(*, session: Session, job_id: int, name: str | None = None) -> list[JobMetric]:
    """A job's metric values, by name then step."""
    stmt = select(JobMetric).where(JobMetric.job_id == job_id)
    if name:
        stmt = stmt.where(JobMetric.name == name)
    return list(session.scalars(stmt.order_by(JobMetric.name, JobMetric.step, JobMetric.id)))


def list_artifacts(*, session: Session, job_id: int) -> list[Artifact]:
    """A job's recorded artifacts, by name."""
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))


def get_artifact(*, session: Session, job_id: int, name: str) -> Artifact | None:
    """One recorded artifact of a job, or None."""
    return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))
