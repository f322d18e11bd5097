"""A lab's worth of rows for the reads benchmark, written in bulk (COPY on PostgreSQL).

The API would take hours to create 100,000 jobs with their events; the reads do not care
how rows arrived, only that they look like the worker's: jobs over 60 days (the newest
10,000 still pending, one running per GPU), each finished job with its status changes, log
lines and metric values, and every device's samples as the sampler keeps them (raw every 5 s
for a day, minute averages for 30 days before that).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from service.models import utcnow

KINDS = ("regression", "classify-digits", "char-rnn", "finetune", "device-compare", "command")
STATUSES = ("succeeded",) * 17 + ("failed",) * 2 + ("cancelled",)
LOG_LINES, METRICS_PER_JOB = 8, 8
SAMPLE_S, RAW_KEEP_S, MINUTE_KEEP_S = 5, 86400, 30 * 86400


@dataclass
class Lab:
    """What was built: the ids a benchmark needs to aim its reads."""

    first_job: int
    jobs: int
    pending: int
    members: list[int]
    devices: list[str]
    rows: dict[str, int]


def _ts(sqlite: bool) -> Any:
    """Naive UTC datetimes as text each database reads (SQLite's in SQLAlchemy's own form)."""
    form = "%Y-%m-%d %H:%M:%S.%f" if sqlite else "%Y-%m-%dT%H:%M:%S.%f"
    return lambda t: t.strftime(form) if t is not None else None


def _copy_text(row: Sequence[Any]) -> str:
    """One row in COPY's text format (the values here hold no tab, newline or backslash)."""
    return "\t".join("\\N" if v is None else ("t" if v is True else "f" if v is False else str(v)) for v in row)


def _write(engine: Engine, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Bulk-load rows: COPY on PostgreSQL, executemany in one transaction on SQLite."""
    n = 0
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                lines = []
                for row in rows:
                    lines.append(_copy_text(row))
                    if len(lines) == 50_000:
                        copy.write("\n".join(lines) + "\n")
                        n += len(lines)
                        lines = []
                if lines:
                    copy.write("\n".join(lines) + "\n")
                    n += len(lines)
        else:
            marks = ", ".join("?" for _ in columns)
            batch: list[Sequence[Any]] = []
            for row in rows:
                batch.append(row)
                if len(batch) == 50_000:
                    cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", batch)
                    n += len(batch)
                    batch = []
            cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", batch)
            n += len(batch)
        raw.commit()
    finally:
        raw.close()
    return n


JOB_COLUMNS = ("id", "owner_id", "kind", "params", "device_request", "request_kind", "gpus", "priority",
               "timeout_s", "seed", "max_attempts", "status", "reason", "attempt", "runs", "device_id",
               "event_seq", "created_at", "dispatched_at", "started_at", "finished_at", "run_seconds",
               "peak_memory_mb")


def _job_rows(first_id: int, jobs: int, pending: int, members: list[int], gpus: list[str], now: datetime,
              ts: Any, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    """Jobs oldest first over 60 days; the newest `pending` wait, one per GPU before them runs."""
    finished = jobs - pending - len(gpus)
    span = timedelta(days=60).total_seconds()
    for k in range(jobs):
        job_id = first_id + k
        owner = members[min(int(rng.paretovariate(1.2)) - 1, len(members) - 1)]  # a few heavy users
        kind = rng.choice(KINDS)
        params = json.dumps({"steps": rng.randrange(100, 5000)})
        if k >= finished + len(gpus):
            created = now - timedelta(seconds=(jobs - k) * 3.0)
            yield (job_id, owner, kind, params, "gpu", "cuda", 1, rng.choice((0, 0, 0, 1)), 3600, k, 3,
                   "pending", None, 0, 0, None, 1, ts(created), None, None, None, None, None)
            continue
        created = now - timedelta(seconds=span * (1 - k / jobs)) - timedelta(hours=3)
        started = created + timedelta(seconds=rng.expovariate(1 / 120))
        device = gpus[k % len(gpus)]
        if k >= finished:
            yield (job_id, owner, kind, params, device, "cuda", 1, 0, 3600 * 24, k, 3, "running", None, 1, 1, device,
                   3, ts(created), ts(created), ts(now - timedelta(minutes=30)), None, None, None)
            continue
        status = rng.choice(STATUSES)
        run = rng.expovariate(1 / 900)
        ended = started + timedelta(seconds=run)
        reason = {"failed": "user_error", "cancelled": "cancelled"}.get(status)
        yield (job_id, owner, kind, params, device, "cuda", 1, 0, 3600, k, 3, status, reason, 1, 1, device,
               4 + LOG_LINES + METRICS_PER_JOB, ts(created), ts(created), ts(started), ts(ended), run,
               rng.uniform(500, 70_000))


def _series(n: int) -> str:
    """A CTE of the integers 1..n that both databases run (SQLite has no generate_series)."""
    return f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {n}) "


def _add_events_and_metrics(engine: Engine, first_id: int) -> None:
    """Per finished job: its three status changes, log lines and metric values between them, its end."""
    json_ = "CAST({} AS json)" if engine.dialect.name == "postgresql" else "{}"
    last = 4 + 2 * LOG_LINES
    step = "((g.n - 4) / 2 * 100)"
    finished = f"j.id >= {first_id} AND j.status IN ('succeeded', 'failed', 'cancelled')"
    with engine.begin() as conn:
        conn.execute(text(
            _series(last) + "INSERT INTO job_events (job_id, seq, attempt, type, message, data, created_at) "
            "SELECT j.id, g.n, 1, CASE WHEN g.n <= 3 OR g.n = :last THEN 'status' "
            "  WHEN g.n % 2 = 0 THEN 'log' ELSE 'metric' END, "
            "CASE g.n WHEN 1 THEN 'pending' WHEN 2 THEN 'dispatched' WHEN 3 THEN 'running' WHEN :last THEN j.status "
            f"  ELSE CASE WHEN g.n % 2 = 0 THEN 'step ' || {step} ELSE '' END END, "
            "CASE WHEN g.n % 2 = 1 AND g.n > 3 AND g.n < :last THEN "
            + json_.format("'{\"name\": \"loss\", \"step\": ' || " + step + " || ', \"value\": 0.5}'")
            + f" END, j.finished_at FROM jobs j, g WHERE {finished} ORDER BY j.id, g.n"), {"last": last})
        conn.execute(text(
            _series(METRICS_PER_JOB) + "INSERT INTO job_metrics (job_id, attempt, name, step, value, created_at) "
            f"SELECT j.id, 1, 'loss', (g.n - 1) * 100, 1.0 / g.n, j.finished_at FROM jobs j, g WHERE {finished} "
            "ORDER BY j.id, g.n"))


def _add_samples(engine: Engine, now: datetime) -> None:
    """Per device: minute averages for 30 days, then raw readings every 5 s for the last day."""
    start = now.replace(microsecond=0, tzinfo=None) - timedelta(seconds=MINUTE_KEEP_S)
    minutes, raws = (MINUTE_KEEP_S - RAW_KEEP_S) // 60, RAW_KEEP_S // SAMPLE_S
    # A spread of readings, the same on both databases (a random() per row would be evaluated once).
    util = "((o.n * 7919 + coalesce(d.\"index\", 9) * 104729) % 1000 / 10.0)"
    if engine.dialect.name == "postgresql":
        at = "CAST(:start AS timestamp) + make_interval(secs => o.s)"
    else:
        at = "datetime(:start, '+' || o.s || ' seconds') || '.000000'"
    with engine.begin() as conn:
        conn.execute(text(
            f"WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < {minutes + raws - 1}), "
            f"o(n, s, resolution) AS (SELECT n, CASE WHEN n < {minutes} THEN n * 60 "
            f"  ELSE {minutes * 60} + (n - {minutes}) * {SAMPLE_S} END, "
            f"  CASE WHEN n < {minutes} THEN 'minute' ELSE 'raw' END FROM g) "
            "INSERT INTO device_samples (device_id, t, resolution, utilization_pct, memory_used_mb, "
            "  memory_total_mb, temperature_c, power_w, external_mb) "
            f"SELECT d.id, {at}, o.resolution, {util}, 40000 + {util} * 300, 81559, 40 + {util} / 3, "
            f"80 + {util} * 5, 0 FROM devices d CROSS JOIN o ORDER BY d.id, o.s"),
            {"start": start.isoformat(sep=" ")})


def build_lab(engine: Engine, *, jobs: int, pending: int, members: int, hosts: int, gpus_per_host: int,
              seed: int = 1) -> Lab:
    """Fill an empty, migrated database with a lab: users, devices, jobs, events, metrics, samples."""
    rng = random.Random(seed)
    sqlite = engine.dialect.name == "sqlite"
    ts = _ts(sqlite)
    now = utcnow()
    with engine.connect() as conn:
        first_user = (conn.execute(text("SELECT max(id) FROM users")).scalar() or 0) + 1
        first_job = (conn.execute(text("SELECT max(id) FROM jobs")).scalar() or 0) + 1
    user_ids = list(range(first_user, first_user + members))
    rows = {"users": _write(engine, "users", ("id", "name", "is_admin", "created_at"),
                            ((u, f"member{u}", False, ts(now)) for u in user_ids))}
    gpus = [f"node{h}/cuda:{i}" for h in range(hosts) for i in range(gpus_per_host)]
    devices = gpus + [f"node{h}/cpu" for h in range(hosts)]
    rows["devices"] = _write(
        engine, "devices", ("id", "host", "kind", "\"index\"", "name", "uuid", "memory_total_mb", "slots", "state",
                            "created_at", "last_seen_at"),
        ((d, d.split("/")[0], "cpu" if d.endswith("cpu") else "cuda", None if d.endswith("cpu") else int(d[-1]),
          "NVIDIA H100 80GB HBM3", None, 81_559, 1, "online", ts(now), ts(now)) for d in devices))
    finished = jobs - pending - len(gpus)
    rows["jobs"] = _write(engine, "jobs", JOB_COLUMNS,
                          _job_rows(first_job, jobs, pending, user_ids, gpus, now, ts, rng))
    running = range(first_job + finished, first_job + finished + len(gpus))
    rows["allocations"] = _write(engine, "allocations", ("job_id", "device_id", "attempt", "leader", "rank"),
                                 ((j, gpus[(j - first_job) % len(gpus)], 1, True, 0) for j in running))
    _add_events_and_metrics(engine, first_job)
    _add_samples(engine, now)
    with engine.connect() as conn:
        for table in ("job_events", "job_metrics", "device_samples"):
            rows[table] = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
        if not sqlite:  # ids were given: move the sequences past them
            for table in ("users", "jobs", "job_events", "job_metrics", "device_samples"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))
            conn.commit()
        else:
            conn.execute(text("ANALYZE"))
            conn.commit()
    if not sqlite:  # statistics, and the visibility map that index-only scans need
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    return Lab(first_job=first_job, jobs=jobs, pending=pending, members=user_ids, devices=devices, rows=rows)
