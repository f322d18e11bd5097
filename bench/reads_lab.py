"""The lab-wide reads at scale: each API read beside the same answer written as raw SQL.

Every read goes through the real HTTP API (in-process over ASGI, with the token check); its
raw-SQL twin runs on a bare DB-API connection in the same run, so the ratio is the price of
the API and its query shapes, not of the machine. The statements the API itself sends are
captured and EXPLAINed, and a scan of a large table on one of them is a finding.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from bench.reads_data import Lab
from service.heap import freeze_start_up
from service.models import utcnow

LARGE_TABLES = ("jobs", "job_events", "job_metrics", "device_samples")
PAGE = 50


@dataclass
class Read:
    """One API read and its raw-SQL twin (several statements, run one after the other)."""

    name: str
    path: str
    sql: list[tuple[str, dict[str, Any]]]
    # Why a whole-table read is this read's nature, not a missing index (printed, not failed).
    scans_by_design: str = ""


@dataclass
class Measured:
    read: Read
    api_ms: float
    raw_ms: float
    plans: list[str] = field(default_factory=list)
    scans: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.api_ms / self.raw_ms if self.raw_ms else float("inf")


JOB_ROW = "SELECT j.*, u.name FROM jobs j JOIN users u ON u.id = j.owner_id"


def lab_reads(lab: Lab, *, me: int, finished: int, dialect: str, since: str) -> list[Read]:
    """The reads a lab makes all day, and how a person would write each in SQL (`me`: the reader's id;
    `finished`: a finished job of theirs, whose log they may read)."""
    deep = lab.first_job + lab.jobs // 20
    page = f"ORDER BY j.id DESC LIMIT {PAGE + 1}"
    epoch = ("(julianday({e}) - julianday({s})) * 86400" if dialect == "sqlite"
             else "extract(epoch FROM {e} - {s})")
    greatest = "max" if dialect == "sqlite" else "greatest"
    start = f"{greatest}(j.started_at, :since)"
    end = "coalesce(j.finished_at, :now)"
    # A folded job's readings are stored on it (service.accounting.rollups); the rest are averaged live.
    util = ("(CASE WHEN j.utilization_readings IS NOT NULL AND j.started_at >= :since "
            "THEN j.utilization_sum / nullif(j.utilization_readings, 0) "
            "ELSE (SELECT avg(s.utilization_pct) FROM device_samples s WHERE s.device_id = j.device_id "
            f"AND s.t >= {start} AND s.t <= {end} AND s.utilization_pct IS NOT NULL) END)")
    seconds = epoch.format(e=end, s=start)
    status_counts = "SELECT kind, status, reason, count(*), count(started_at), sum(run_seconds) FROM jobs "
    latest = ("SELECT d.*, s.* FROM devices d LEFT JOIN device_samples s ON s.id = (SELECT id FROM device_samples "
              "WHERE device_id = d.id AND resolution = 'raw' ORDER BY t DESC LIMIT 1) ORDER BY d.id")
    running = ("SELECT a.device_id, j.id, j.kind, j.status, j.gpu_memory_gb, u.name FROM jobs j "
               "JOIN allocations a ON a.job_id = j.id JOIN users u ON u.id = j.owner_id "
               "WHERE j.status IN ('dispatched', 'running') ORDER BY j.id")
    return [
        # The price of any read: HTTP in-process, the token check, one primary-key lookup.
        Read("GET /me (the floor of every read)", "/me", [("SELECT id, name, is_admin FROM users WHERE id = :me",
                                                          {"me": me})]),
        Read("GET /jobs", f"/jobs?limit={PAGE}", [(f"{JOB_ROW} {page}", {})],
             scans_by_design="SQLite walks the primary key newest first and stops at the page's end"),
        Read("GET /jobs?me=true", f"/jobs?me=true&limit={PAGE}", [(f"{JOB_ROW} WHERE j.owner_id = :me {page}",
                                                                   {"me": me})]),
        Read("GET /jobs?status=failed", f"/jobs?status=failed&limit={PAGE}",
             [(f"{JOB_ROW} WHERE j.status = 'failed' {page}", {})]),
        Read("GET /jobs?status=running", f"/jobs?status=running&limit={PAGE}",
             [(f"{JOB_ROW} WHERE j.status = 'running' {page}", {})]),
        Read("GET /jobs?cursor=<deep>", f"/jobs?cursor={deep}&limit={PAGE}",
             [(f"{JOB_ROW} WHERE j.id < :deep {page}", {"deep": deep})]),
        Read("GET /jobs?me&status&cursor=<deep>", f"/jobs?me=true&status=succeeded&cursor={deep}&limit={PAGE}",
             [(f"{JOB_ROW} WHERE j.owner_id = :me AND j.status = 'succeeded' AND j.id < :deep {page}",
               {"me": me, "deep": deep})]),
        Read("GET /jobs/{id}", f"/jobs/{finished}",
             [(f"{JOB_ROW} WHERE j.id = :j", {"j": finished}),
              ("SELECT data FROM job_events WHERE job_id = :j AND type = 'progress' ORDER BY seq DESC LIMIT 1",
               {"j": finished})]),
        Read("GET /jobs/{id}/log", f"/jobs/{finished}/log?limit=200",
             [("SELECT status, event_seq FROM jobs WHERE id = :j", {"j": finished}),
              ("SELECT seq, type, message, data, created_at FROM job_events WHERE job_id = :j "
               "AND type IN ('log', 'status') ORDER BY seq DESC LIMIT 201", {"j": finished})]),
        # The page /queue answers (500 entries in start order, the count of all), not all 10,000 as it
        # once did: priority and age, since fair share and the wait reasons have no SQL to stand for them.
        Read("GET /queue", "/queue",
             [("SELECT j.id, j.owner_id, u.name, j.kind, j.device_request, j.priority, j.gpus, j.created_at "
               "FROM jobs j JOIN users u ON u.id = j.owner_id WHERE j.status = 'pending' "
               "ORDER BY j.priority DESC, j.id LIMIT 500", {}),
              ("SELECT count(*) FROM jobs WHERE status = 'pending'", {}), (latest, {}), (running, {})]),
        Read("GET /devices", "/devices", [(latest, {}), (running, {})]),
        Read("GET /usage?since=30d", "/usage?since=30d",
             [("SELECT u.name, j.status, d.kind, count(*), "
               f"sum({seconds}), sum({seconds} * {util} / 100) FROM jobs j JOIN users u ON u.id = j.owner_id "
               "LEFT JOIN devices d ON d.id = j.device_id "
               "WHERE j.finished_at IS NULL OR j.finished_at >= :since GROUP BY u.name, j.status, d.kind",
               {"since": since, "now": _now_text(dialect)})],
             scans_by_design="30 days of a 60-day history are half the jobs: one pass beats the index"),
        # The final jobs' counts are folded into job_tallies; the rest are counted at the scrape.
        Read("GET /metrics", "/metrics",
             [("SELECT * FROM job_tallies", {}),
              (status_counts + "WHERE utilization_readings IS NULL GROUP BY kind, status, reason", {}),
              (latest, {}), (running, {})]),
    ]


def _now_text(dialect: str) -> str:
    return utcnow().strftime("%Y-%m-%d %H:%M:%S.%f" if dialect == "sqlite" else "%Y-%m-%dT%H:%M:%S.%f")


class StatementLog:
    """The SELECTs an engine sends while it is on (statement and DB-API parameters)."""

    def __init__(self, engine: Engine):
        self.on = False
        self.seen: list[tuple[str, Any]] = []

        @event.listens_for(engine, "before_cursor_execute")
        def _log(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            if self.on and statement.lstrip().upper().startswith(("SELECT", "WITH")):
                self.seen.append((statement, parameters))


def to_dbapi(dialect: str, sql: str) -> str:
    """:name parameters in the driver's style."""
    return sql if dialect == "sqlite" else re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql)


def explain(cur: Any, dialect: str, statement: str, parameters: Any) -> str:
    """The plan, one node a line."""
    cur.execute(("EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN ") + statement, parameters)
    return "\n".join(str(r[-1] if dialect == "sqlite" else r[0]) for r in cur.fetchall())


def large_scans(plan: str) -> list[str]:
    """Lines of a plan that read a large table whole (a sequential scan, or SQLite's SCAN of the table)."""
    names = "|".join(LARGE_TABLES)
    # The partial index of unfolded jobs (service.accounting.rollups) holds those few, not the table.
    pattern = re.compile(rf"Seq Scan on ({names})\b|^\s*(?:\W*\s*)?SCAN ({names})\b"
                         r"(?! USING (COVERING|INDEX ix_jobs_unfolded))")
    return [line.strip() for line in plan.splitlines() if pattern.search(line)]


def interleaved_p50_ms(a: Callable[[], Any], b: Callable[[], Any], runs: int) -> tuple[float, float]:
    """p50 of `a` and of `b` run in turns, so that both see the same load of a shared machine."""
    a(), b()
    ta, tb = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        ta.append(t1 - t0)
        tb.append(time.perf_counter() - t1)
    return 1000 * statistics.median(ta), 1000 * statistics.median(tb)


def measure(client: TestClient, headers: dict[str, str], engine: Engine, reads: list[Read], runs: int
            ) -> list[Measured]:
    """Each read through the API and as raw SQL, p50 of `runs`; the API's own statements EXPLAINed.

    The objects alive now (the app, the lab's imports) are frozen first, as `gpulab api` freezes
    its start-up's (`service.heap`): else Python's full collection walks them all again, 65 ms
    now and then, in the middle of whichever request made the objects that set it off.
    """
    freeze_start_up()
    dialect = engine.dialect.name
    log = StatementLog(engine)
    raw = engine.raw_connection()
    out = []
    try:
        cur = raw.cursor()

        def api(read: Read) -> None:
            r = client.get(read.path, headers=headers)
            assert r.status_code == 200, f"{read.path}: {r.status_code} {r.text[:200]}"

        def twin(read: Read) -> None:
            for sql, params in read.sql:
                cur.execute(to_dbapi(dialect, sql), params)
                cur.fetchall()

        for read in reads:
            api(read)  # warm: caches (fair share's usage, prepared statements) fill on the first call
            log.seen, log.on = [], True
            api(read)
            log.on = False
            api_ms, raw_ms = interleaved_p50_ms(lambda read=read: api(read), lambda read=read: twin(read), runs)
            m = Measured(read, api_ms=api_ms, raw_ms=raw_ms)
            for statement, parameters in log.seen:
                plan = explain(cur, dialect, statement, parameters)
                m.plans.append(f"{' '.join(statement.split())[:160]}\n{plan}")
                m.scans += large_scans(plan)
            raw.rollback()
            out.append(m)
    finally:
        raw.close()
    return out
