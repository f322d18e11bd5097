"""A job page's reads on both databases: the log paginated from the end, metric series
downsampled in SQL (and whole on request), and the query plans use the indexes."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import text

from service.db import Database
from service.models import Job
from service.scheduling.device_request import request_fields
from service.store.events import append_events, status_event
from service.store.job_records import insert_job
from service.store.job_views import log_tail, metric_series
from service.store.users import create_user


@pytest.fixture
def job_id(db: Database) -> int:
    """A job with 30 log lines, two status changes and 2,000 metric values around them."""
    with db.writing() as s:
        user, _ = create_user(session=s, name="ann")
        job, _ = insert_job(session=s, job=Job(owner_id=user.id, kind="test-echo", params={}, **request_fields("cpu"),
                                               timeout_s=60))
        s.commit()
        jid = job.id
    with db.writing() as s:
        events = [status_event("running")]
        for step in range(1500):
            events.append({"type": "metric", "data": {"name": "loss", "step": step, "value": 1.0 / (step + 1)}})
            if step % 50 == 0:
                events.append({"type": "log", "message": f"step {step}"})
        for step in range(0, 1500, 3):
            events.append({"type": "metric", "data": {"name": "val_mse", "step": step, "value": math.sin(step)}})
        events.append({"type": "metric", "data": {"name": "accuracy", "step": None, "value": 0.93}})
        events.append(status_event("succeeded"))
        append_events(s, job_id=jid, events=events)
        s.commit()
    return jid


def test_log_reads_from_the_end_in_pages(db: Database, job_id: int) -> None:
    with db.reading() as s:
        last, before = log_tail(session=s, job_id=job_id, limit=10)
        assert [e["message"] for e in last][-1] == "succeeded"
        assert [e["message"] for e in last][:-1] == [f"step {n}" for n in range(1050, 1500, 50)]
        assert all(e["type"] in ("log", "status") for e in last)
        pages = [last]
        while before is not None:
            page, before = log_tail(session=s, job_id=job_id, before_seq=before, limit=10)
            pages.insert(0, page)
        lines = [e["message"] for p in pages for e in p]
    assert lines == ["submitted", "running"] + [f"step {n}" for n in range(0, 1500, 50)] + ["succeeded"]
    assert len(pages) == 4  # 33 lines in pages of 10, the oldest page short


def test_metric_series_downsampled_with_min_and_max(db: Database, job_id: int) -> None:
    with db.reading() as s:
        series = {m.name: m for m in metric_series(session=s, job_id=job_id, points=100)}
    assert set(series) == {"accuracy", "loss", "val_mse"}
    loss = series["loss"]
    assert loss.downsampled and loss.count == 1500
    assert 90 <= len(loss.step) <= 100
    assert loss.step[0] == 0 and loss.step == sorted(loss.step)
    assert loss.max is not None and loss.min is not None
    assert loss.max[0] == 1.0  # the first step's value survives in its bucket's max
    assert min(loss.min) == pytest.approx(1.0 / 1500)
    # Each bucket's mean is the mean of the values whose steps fall in it.
    width = 1500 / 100
    first = [1.0 / (k + 1) for k in range(1500) if k * 100 // 1500 == 0]
    assert loss.value[0] == pytest.approx(sum(first) / len(first)) and len(first) == width
    assert all(lo <= v <= hi for lo, v, hi in zip(loss.min, loss.value, loss.max, strict=True))
    assert series["val_mse"].downsampled and series["val_mse"].count == 500
    accuracy = series["accuracy"]  # a value without a step comes back whole
    assert not accuracy.downsampled and accuracy.step == [None] and accuracy.value == [0.93]


def test_metric_series_in_full_on_request(db: Database, job_id: int) -> None:
    with db.reading() as s:
        (loss,) = metric_series(session=s, job_id=job_id, names=["loss"], full=True)
        (small,) = metric_series(session=s, job_id=job_id, names=["val_mse"], points=1000)
    assert not loss.downsampled and loss.step == list(range(1500)) and loss.min is None
    assert loss.value[:3] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert not small.downsampled and len(small.value) == 500  # under the points asked for: every value


def _plan(db: Database, sql: str, params: dict) -> str:
    with db.reading() as s:
        if s.bind.dialect.name == "sqlite":
            rows = s.execute(text("EXPLAIN QUERY PLAN " + sql), params).all()
            return "\n".join(str(r[-1]) for r in rows)
        s.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table would be scanned anyway
        s.execute(text("ANALYZE job_events")), s.execute(text("ANALYZE job_metrics"))
        return "\n".join(r[0] for r in s.execute(text("EXPLAIN " + sql), params))


def test_page_reads_use_the_indexes(db: Database, job_id: int) -> None:
    log = _plan(db, "SELECT seq, message FROM job_events WHERE job_id = :j AND type = 'log' "
                    "ORDER BY seq DESC LIMIT 200", {"j": job_id})
    assert "ix_job_events_job_type_seq" in log and "Seq Scan" not in log, log
    metrics = _plan(db, "SELECT min(step), avg(value), min(value), max(value) FROM job_metrics "
                        "WHERE job_id = :j AND name = 'loss' GROUP BY (step * 500) / 1500", {"j": job_id})
    assert "ix_job_metrics_job_name_step_value" in metrics, metrics
    assert "SCAN job_metrics " not in metrics + " " and "Seq Scan" not in metrics
    if db.engine.dialect.name == "sqlite":  # PostgreSQL reads the index alone only once vacuumed
        assert "COVERING INDEX" in metrics, metrics


def test_the_api_serves_the_page_reads_and_a_final_jobs_chart_from_its_summary(settings, job_id: int) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient
    from sqlalchemy import delete, update

    from service.api.app import create_app
    from service.models import Job as JobRow
    from service.models import JobMetric
    from service.store.metric_summaries import summarise_job

    app = create_app(settings)
    db: Database = app.state.gpulab.db
    with db.writing() as s:
        _, token = create_user(session=s, name="reader", is_admin=True)  # the job is not its own
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        page = client.get(f"/jobs/{job_id}/log?limit=5", headers=headers).json()
        assert [e["message"] for e in page["items"]][-1] == "succeeded" and len(page["items"]) == 5
        older = client.get(f"/jobs/{job_id}/log?limit=5&before={page['before']}", headers=headers).json()
        assert older["items"][-1]["seq"] < page["items"][0]["seq"]
        assert page["last_seq"] >= page["items"][-1]["seq"]
        bad = client.get(f"/jobs/{job_id}/metrics/series?points=3", headers=headers)
        assert bad.status_code == 422 and bad.json()["field"] == "points"
        assert client.get("/jobs/999999/log", headers=headers).json()["code"] == "job_not_found"

        loss = client.get(f"/jobs/{job_id}/metrics/series?name=loss&points=100", headers=headers).json()
        assert [s["name"] for s in loss] == ["loss"] and loss[0]["downsampled"] and loss[0]["count"] == 1500
        with db.writing() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(status="succeeded"))
            s.commit()
        with db.reading() as read, db.writing() as write:
            assert summarise_job(read=read, write=write, job_id=job_id)
        live = client.get(f"/jobs/{job_id}/metrics/series", headers=headers).json()
        with db.writing() as s:  # what is read from here on can only come from the summary
            s.execute(delete(JobMetric).where(JobMetric.job_id == job_id))
            s.commit()
        assert client.get(f"/jobs/{job_id}/metrics/series", headers=headers).json() == live
        assert [s["name"] for s in live] == ["accuracy", "loss", "val_mse"] and live[1]["count"] == 1500
        # Another chart size and every value are read live: nothing is left of them.
        assert client.get(f"/jobs/{job_id}/metrics/series?points=100", headers=headers).json() == []
        assert client.get(f"/jobs/{job_id}/metrics/series?name=loss&full=true", headers=headers).json() == []
