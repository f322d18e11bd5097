"""A finished job's page with 100,000 metric values, through the API and as raw SQL (part of bench.reads).

One succeeded job with `points` metric values in three metrics, a log line every 50 steps,
and the matching events, as the worker writes them. Measured: the page's reads through the
API (GET /jobs/{id}, /log, /metrics/series, ... one after the other, as the dashboard sends
them) before and after its chart summary is stored (the dispatcher's housekeeping), the
same queries in raw SQL, and the old way for scale: every event through GET /jobs/{id}/events,
page by page.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert, text, update

from service.db import Database
from service.models import Job, JobEvent, JobMetric, JobMetricSummary, JobStatus, utcnow
from service.scheduling.device_request import request_fields
from service.store.metric_summaries import summarise_job
from service.store.users import create_user

METRICS = (("loss", 0.8), ("val_loss", 0.16), ("lr", 0.04))  # share of the points per metric
POINTS, LOG_LIMIT = 500, 200


def build_job(db: Database, points: int) -> tuple[int, str]:
    """One succeeded job with `points` metric values and their events; returns (job id, token)."""
    with db.writing() as s:
        _, token = create_user(session=s, name="bench", is_admin=True)
        user_id = s.execute(text("SELECT id FROM users WHERE name = 'bench'")).scalar_one()
        now = utcnow()
        job = Job(owner_id=user_id, kind="regression", params={}, **request_fields("cpu"), timeout_s=3600,
                  status=JobStatus.succeeded, created_at=now - timedelta(hours=1), started_at=now - timedelta(hours=1),
                  finished_at=now, device_id=None, attempt=1, runs=1)
        s.add(job)
        s.flush()
        job_id = job.id
        s.commit()
    events: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    seq = 0
    t0 = utcnow() - timedelta(hours=1)
    for name, share in METRICS:
        n = int(points * share)
        every = max(1, int(METRICS[0][1] * points) // n)
        for i in range(n):
            step = i * every
            seq += 1
            at = t0 + timedelta(milliseconds=step)
            value = 1.0 / (1 + step) + (0.01 if i % 7 == 0 else 0.0)
            events.append({"job_id": job_id, "seq": seq, "attempt": 1, "type": "metric", "message": "",
                           "data": {"name": name, "step": step, "value": value}, "created_at": at})
            metrics.append({"job_id": job_id, "attempt": 1, "name": name, "step": step, "value": value,
                            "created_at": at})
            if name == "loss" and step % 50 == 0:
                seq += 1
                events.append({"job_id": job_id, "seq": seq, "attempt": 1, "type": "log",
                               "message": f"step {step}: loss {value:.5f}", "data": None, "created_at": at})
    with db.writing() as s:
        for i in range(0, len(events), 20_000):
            s.execute(insert(JobEvent), events[i:i + 20_000])
        for i in range(0, len(metrics), 20_000):
            s.execute(insert(JobMetric), metrics[i:i + 20_000])
        s.execute(text("UPDATE jobs SET event_seq = :n WHERE id = :j"), {"n": seq, "j": job_id})
        s.commit()
    return job_id, token


def p50_ms(fn: Callable[[], Any], runs: int, clock: Callable[[], float] = time.perf_counter) -> float:
    fn()  # warm: caches, prepared statements
    times = []
    for _ in range(runs):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return 1000 * statistics.median(times)


def raw_queries(job_id: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """The page's queries as a person would write them by hand (named :params)."""
    log_part = "SELECT id, seq FROM job_events WHERE job_id = :j AND type = '{t}' ORDER BY seq DESC LIMIT :n"
    one = "FROM job_metrics WHERE job_id = :j AND name = :name"
    return {
        "job": ("SELECT j.*, u.name FROM jobs j JOIN users u ON u.id = j.owner_id WHERE j.id = :j", {"j": job_id}),
        "log": (f"SELECT seq, type, message, data, created_at FROM job_events WHERE id IN ("
                f"SELECT id FROM (SELECT * FROM ({log_part.format(t='log')}) a UNION ALL "
                f"SELECT * FROM ({log_part.format(t='status')}) b) c ORDER BY seq DESC LIMIT :n) ORDER BY seq",
                {"j": job_id, "n": LOG_LIMIT + 1}),
        "statuses": ("SELECT seq, type, message, data, created_at FROM job_events "
                     "WHERE job_id = :j AND seq > 0 AND type IN ('status') ORDER BY seq LIMIT 1000", {"j": job_id}),
        "names": ("WITH RECURSIVE n(name) AS (SELECT min(name) FROM job_metrics WHERE job_id = :j UNION ALL "
                  "SELECT (SELECT min(m.name) FROM job_metrics m WHERE m.job_id = :j AND m.name > n.name) "
                  "FROM n WHERE n.name IS NOT NULL) SELECT name FROM n WHERE name IS NOT NULL", {"j": job_id}),
        "extent": (f"SELECT (SELECT min(step) {one}), (SELECT max(step) {one}), "
                   f"(SELECT id {one} AND step IS NULL LIMIT 1)", {"j": job_id, "name": "loss"}),
        "buckets": (f"SELECT min(step), avg(value), min(value), max(value), count(*) {one} "
                    "GROUP BY ((step - :lo) * :p) / :span",
                    {"j": job_id, "name": "loss", "lo": 0, "p": POINTS, "span": 100_000}),
        "summary": ("SELECT series FROM job_metric_summaries WHERE job_id = :j", {"j": job_id}),
    }


def page_reads(client: TestClient, db: Database, job_id: int, token: str, runs: int) -> dict[str, Any]:
    """The job page's reads through the API and as raw SQL, with the plans of the raw queries."""
    dialect = db.engine.dialect.name
    out: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {token}"}
    def get(path: str) -> Any:
        r = client.get(path, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    def page() -> None:
        # Every request the dashboard's job page makes for a finished job, one after the
        # other (the browser sends them in parallel).
        get(f"/jobs/{job_id}")
        get(f"/jobs/{job_id}/log?limit={LOG_LIMIT}")
        get(f"/jobs/{job_id}/metrics/series?points={POINTS}")
        get(f"/jobs/{job_id}/events?type=status")
        get(f"/usage/jobs/{job_id}")
        get(f"/jobs/{job_id}/artifacts")

    series = get(f"/jobs/{job_id}/metrics/series?points={POINTS}")
    out["metric_values"] = sum(s["count"] for s in series)
    out["chart_points"] = sum(len(s["value"]) for s in series)

    def series_() -> None:
        get(f"/jobs/{job_id}/metrics/series?points={POINTS}")

    t0 = time.perf_counter()
    with db.reading() as read, db.writing() as write:
        assert summarise_job(read=read, write=write, job_id=job_id)
    out["summarise_ms"] = 1000 * (time.perf_counter() - t0)
    assert get(f"/jobs/{job_id}/metrics/series?points={POINTS}") == series, "the summary differs from the live read"

    def summary(valid: bool) -> None:  # a summary made for another chart size is not read
        with db.writing() as s:
            s.execute(update(JobMetricSummary).where(JobMetricSummary.job_id == job_id)
                      .values(points=POINTS if valid else 0))
            s.commit()

    # The page aggregated live (before the dispatcher's housekeeping stored its summary) and
    # from the summary, in turns, so that both see the same load of a shared machine. CPU:
    # this process's (the API and, on SQLite, the database too); wall time also counts the
    # wait for a core, this does not.
    for key, fn in (("page", page), ("series", series_)):
        timed: dict[str, list[float]] = {"live_ms": [], "live_cpu_ms": [], "ms": [], "cpu_ms": []}
        for i in range(2 * runs + 2):
            valid = i % 2 == 1
            summary(valid)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if i >= 2:  # the first of each: warm-up
                timed["ms" if valid else "live_ms"].append(1000 * (time.perf_counter() - t0))
                timed["cpu_ms" if valid else "live_cpu_ms"].append(1000 * (time.process_time() - c0))
        out.update({f"{key}_{k}": statistics.median(v) for k, v in timed.items()})
    out["series_cpu"] = f"{out['series_live_cpu_ms']:.1f} / {out['series_cpu_ms']:.1f}"
    out["job_ms"] = p50_ms(lambda: get(f"/jobs/{job_id}"), runs)
    out["log_ms"] = p50_ms(lambda: get(f"/jobs/{job_id}/log?limit={LOG_LIMIT}"), runs)
    out["statuses_ms"] = p50_ms(lambda: get(f"/jobs/{job_id}/events?type=status"), runs)
    out["usage_ms"] = p50_ms(lambda: get(f"/usage/jobs/{job_id}"), runs)
    out["artifacts_ms"] = p50_ms(lambda: get(f"/jobs/{job_id}/artifacts"), runs)
    full_loss = lambda: get(f"/jobs/{job_id}/metrics/series?name=loss&full=true")  # noqa: E731
    out["full_loss_values"] = len(full_loss()[0]["value"])
    out["full_loss_ms"] = p50_ms(full_loss, max(3, runs // 10))

    def replay() -> int:
        after, n = 0, 0
        while True:
            page_ = get(f"/jobs/{job_id}/events?after={after}&limit=5000")
            n += len(page_["items"])
            if not page_["items"]:
                return n
            after = page_["last_seq"]

    out["events"] = replay()
    out["replay_ms"] = p50_ms(replay, 1)

    queries = raw_queries(job_id)
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        style = (lambda sql: sql) if dialect == "sqlite" else (
            lambda sql: re.sub(r":(\w+)", r"%(\1)s", sql))

        def run(name: str) -> list[Any]:
            sql, params = queries[name]
            cur.execute(style(sql), params)
            return cur.fetchall()

        def raw_page_live() -> None:
            run("job")
            run("log")
            run("statuses")
            for (name,) in run("names"):
                queries["extent"][1]["name"] = name
                lo, hi, _ = run("extent")[0]
                sql, params = queries["buckets"]
                params.update(name=name, lo=lo, span=hi - lo + 1)
                sorted(run("buckets"), key=lambda r: r[0])

        def raw_page() -> None:
            run("job")
            run("log")
            run("statuses")
            (series,) = run("summary")[0]
            if isinstance(series, str):  # SQLite's driver leaves JSON as text
                json.loads(series)

        out["raw_page_live_ms"] = p50_ms(raw_page_live, runs)
        out["raw_page_ms"] = p50_ms(raw_page, runs)
        plans = {}
        for name, (sql, params) in queries.items():
            explain = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
            cur.execute(style(explain + sql), params)
            plans[name] = "\n".join(str(r[-1] if dialect == "sqlite" else r[0]) for r in cur.fetchall())
        out["plans"] = plans
    finally:
        raw.close()
    return out


