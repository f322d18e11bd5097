"""Chart summaries on both databases: written once a job is final, equal to the live downsample,
never shown for an attempt or events they were not made from, and stored once."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from service.db import Database
from service.models import Job, JobMetric, JobMetricSummary, utcnow
from service.scheduling.device_request import request_fields
from service.scheduling.dispatcher import SUMMARY_LOOKBACK, Dispatcher
from service.settings import Settings
from service.store import metric_summaries
from service.store.events import append_events, status_event
from service.store.job_records import insert_job
from service.store.job_views import metric_series
from service.store.metric_summaries import CHART_POINTS, chart_series, jobs_to_summarise, summarise_job
from service.store.users import create_user


def _job(db: Database, steps: int, *, status: str = "succeeded") -> int:
    """A job with `steps` loss values, a third as many val_mse values and one value without a step."""
    with db.writing() as s:
        user = s.scalar(select(func.min(Job.owner_id)))
        if user is None:
            user = create_user(session=s, name="ann")[0].id
        job, _ = insert_job(session=s, job=Job(owner_id=user, kind="test-echo", params={}, **request_fields("cpu"),
                                               timeout_s=60))
        s.commit()
        jid = job.id
    with db.writing() as s:
        events: list[dict[str, Any]] = [status_event("running")]
        events += [{"type": "metric", "data": {"name": "loss", "step": k, "value": 1.0 / (k + 1)}}
                   for k in range(steps)]
        events += [{"type": "metric", "data": {"name": "val_mse", "step": k, "value": math.sin(k)}}
                   for k in range(0, steps, 3)]
        events.append({"type": "metric", "data": {"name": "accuracy", "step": None, "value": 0.93}})
        append_events(s, job_id=jid, events=events, attempt=0)
        s.execute(update(Job).where(Job.id == jid).values(status=status, finished_at=utcnow()))
        s.commit()
    return jid


def _summarise(db: Database, job_id: int) -> bool:
    with db.reading() as read, db.writing() as write:
        return summarise_job(read=read, write=write, job_id=job_id)


def _series(db: Database, job_id: int, **kwargs: Any) -> list[dict[str, Any]]:
    with db.reading() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return [asdict(m) for m in chart_series(session=s, job=job, **kwargs)]


def _forget_values(db: Database, job_id: int) -> None:
    """Delete the job's metric values: what is read afterwards can only come from its summary."""
    with db.writing() as s:
        s.execute(delete(JobMetric).where(JobMetric.job_id == job_id))
        s.commit()


def test_a_summary_equals_the_live_downsample_and_is_read_instead(db: Database) -> None:
    job_id = _job(db, 1500)
    live = _series(db, job_id)
    assert [(m["name"], m["downsampled"]) for m in live] == [("accuracy", False), ("loss", True), ("val_mse", False)]
    with db.reading() as s:
        assert [j for j, _ in jobs_to_summarise(session=s, since=utcnow() - timedelta(hours=1))] == [job_id]
    assert _summarise(db, job_id)
    with db.reading() as s:
        assert jobs_to_summarise(session=s, since=utcnow() - timedelta(hours=1)) == []
    _forget_values(db, job_id)
    assert _series(db, job_id) == live
    assert _series(db, job_id, names=["val_mse", "nothing", "loss"]) == [live[2], live[1]]
    # Other chart sizes and every value are read live (here: nothing is left to read).
    assert _series(db, job_id, points=100) == [] and _series(db, job_id, full=True) == []


def test_a_retried_job_does_not_show_the_old_attempts_summary(db: Database) -> None:
    job_id = _job(db, 1200)
    assert _summarise(db, job_id)
    first = _series(db, job_id)
    with db.writing() as s:  # a new attempt ran and ended, with values of its own
        s.execute(update(Job).where(Job.id == job_id).values(attempt=2))
        append_events(s, job_id=job_id, attempt=2, events=[
            {"type": "metric", "data": {"name": "loss", "step": k, "value": 5.0}} for k in range(1200, 1800)])
        s.commit()
    again = _series(db, job_id)
    loss = next(m for m in again if m["name"] == "loss")
    assert loss["count"] == 1800 and again != first
    with db.reading() as s:
        assert [j for j, _ in jobs_to_summarise(session=s, since=utcnow() - timedelta(hours=1))] == [job_id]
    assert _summarise(db, job_id)
    with db.reading() as s:
        row = s.get(JobMetricSummary, job_id)
        assert row is not None and row.attempt == 2
    assert _series(db, job_id) == again


def test_a_job_with_fewer_values_than_the_chart_gets_no_summary(db: Database) -> None:
    job_id = _job(db, CHART_POINTS // 2)
    with db.reading() as s:
        assert jobs_to_summarise(session=s, since=utcnow() - timedelta(hours=1)) == []
    assert not _series(db, job_id)[1]["downsampled"]


def test_a_running_job_or_one_that_moves_on_meanwhile_is_not_stored(db: Database,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    running = _job(db, 1000, status="running")
    assert not _summarise(db, running)
    job_id = _job(db, 1000)

    def late_event(**kwargs: Any) -> Any:
        # An event lands while the values are read (a zombie worker's last batch).
        with db.writing() as s:
            append_events(s, job_id=job_id, events=[{"type": "log", "message": "late"}])
            s.commit()
        return metric_series(**kwargs)

    monkeypatch.setattr(metric_summaries, "metric_series", late_event)
    assert not _summarise(db, job_id)
    monkeypatch.undo()
    with db.reading() as s:
        assert s.get(JobMetricSummary, job_id) is None
        assert s.scalar(select(func.count()).select_from(JobMetricSummary)) == 0
    assert _summarise(db, job_id) and _summarise(db, job_id)  # written again: the same one row
    with db.reading() as s:
        assert s.scalar(select(func.count()).select_from(JobMetricSummary)) == 1


def test_the_dispatchers_housekeeping_summarises_what_finished_since_its_last_pass(settings: Settings,
                                                                                   db: Database) -> None:
    old = _job(db, 800)
    with db.writing() as s:  # finished before the dispatcher's look back: left to the live read
        s.execute(update(Job).where(Job.id == old).values(finished_at=utcnow() - 2 * SUMMARY_LOOKBACK))
        s.commit()
    dispatcher = Dispatcher(settings, db=db)
    fresh = _job(db, 800)
    _job(db, 100)  # too few values to summarise
    assert dispatcher.summarise() == 1
    with db.reading() as s:
        assert list(s.scalars(select(JobMetricSummary.job_id))) == [fresh]
    assert dispatcher._summarised_to > utcnow() - timedelta(minutes=1)
    later = _job(db, 900)
    assert dispatcher.summarise() == 1 and dispatcher.summarise() == 0
    with db.reading() as s:
        assert sorted(s.scalars(select(JobMetricSummary.job_id))) == [fresh, later]
