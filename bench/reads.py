"""Reads at scale: a lab's 100,000 jobs and millions of device samples, every read through the API
beside the same answer in raw SQL.

    python -m bench.reads [--jobs 100000] [--hosts 8] [--points 100000] [--runs 20] [--sqlite-only]
    python -m bench.reads --quick        # 5,000 jobs on one host, for development
    python -m bench.reads --page-only    # only the job page, at --points values
    python -m bench.reads --only usage,metrics   # the lab, but only these reads (and GET /me)

On SQLite and on PostgreSQL (the `GPULAB_TEST_PG_URL` server), in one run:
- a lab written in bulk (bench.reads_data): `--jobs` jobs over 60 days, the newest 10 % (at
  most 10,000) pending, one running per GPU, each finished one with 20 events and 8 metric
  values; `--hosts` × 8 GPUs (+ a CPU each) with 30 days of samples (~59,000 per device);
  then its final jobs folded as the dispatcher's housekeeping does (service.accounting.rollups), timed;
- one finished job with `--points` metric values (bench.reads_page): the job page's reads;
- the lab's reads (bench.reads_lab): GET /jobs pages, one job, its log, /queue, /devices,
  /usage over 30 days, /metrics, each beside its raw-SQL twin (goal: p50 ≤ 3× raw SQL);
- the plans of the statements the API sent: a scan of jobs, events, metrics or samples on
  one of them fails the run (exit 1), unless the read needs every row by its nature.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from bench.reads_data import build_lab
from bench.reads_lab import Measured, lab_reads, measure
from bench.reads_page import build_job, page_reads
from migrations.migrate import upgrade
from service.accounting.rollups import fold_ended_jobs
from service.accounting.usage import parse_since
from service.api.app import create_app
from service.db import Database
from service.settings import Settings
from service.store.users import issue_token
from tests.support import services


def bench_database(label: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    upgrade(url)
    state = Path(tempfile.mkdtemp(prefix="gpulab-bench-reads-"))
    settings = Settings(database_url=url, redis_url=f"{services.REDIS_BASE_URL}/0", state_dir=state, host="bench")
    app = create_app(settings)
    db: Database = app.state.gpulab.db
    t0 = time.perf_counter()
    job_id, admin_token = build_job(db, args.points)
    if args.page_only:
        with TestClient(app) as client:
            page = {"db": label, "build_s": time.perf_counter() - t0, **page_reads(client, db, job_id, admin_token,
                                                                                     args.runs)}
        db.engine.dispose()
        return page
    lab = build_lab(db.engine, jobs=args.jobs, pending=min(10_000, args.jobs // 10), members=40, hosts=args.hosts,
                    gpus_per_host=8)
    out: dict[str, Any] = {"db": label, "build_s": time.perf_counter() - t0, "rows": lab.rows}
    t0, total = time.perf_counter(), 0
    while folded := fold_ended_jobs(db):  # a batch a pass, as the dispatcher does
        total += folded
    out.update(folded=total, fold_s=time.perf_counter() - t0)
    # Statistics again (build_lab took them before the fold emptied the index of unfolded jobs),
    # and on PostgreSQL the visibility map, as autovacuum would after rewriting every final job.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE" if db.engine.dialect.name == "sqlite" else "VACUUM ANALYZE jobs"))
    me = lab.members[4]  # a member with a typical share of the jobs reads "my jobs"
    with db.writing() as s:
        member_token = issue_token(session=s, name=f"member{me}")
    dialect = db.engine.dialect.name
    since = parse_since("30d").replace(tzinfo=None)
    with db.reading() as s:  # a job's log is its owner's (and admins'): the reader reads one of theirs
        middle = lab.first_job + lab.jobs // 2
        finished = s.execute(text("SELECT max(id) FROM jobs WHERE owner_id = :me AND status = 'succeeded' "
                                  "AND id <= :middle"), {"me": me, "middle": middle}).scalar_one()
    reads = lab_reads(lab, me=me, finished=finished, dialect=dialect, since=since.strftime(
        "%Y-%m-%d %H:%M:%S.%f" if dialect == "sqlite" else "%Y-%m-%dT%H:%M:%S.%f"))
    if args.only:  # GET /me stays: the floor the table's last column is measured from
        reads = [r for i, r in enumerate(reads) if i == 0 or any(name in r.name for name in args.only.split(","))]
    with TestClient(app) as client:
        out.update(page_reads(client, db, job_id, admin_token, args.runs))
        out["lab"] = measure(client, {"Authorization": f"Bearer {member_token}"}, db.engine, reads, args.runs)
    db.engine.dispose()
    return out


PAGE_ROWS = [("events (what the stream replayed)", "events", "{:,}"), ("replay every event, ms", "replay_ms", "{:.0f}"),
             ("chart points sent", "chart_points", "{:,}"),
             ("GET /jobs/{id}, ms", "job_ms", "{:.1f}"), ("GET …/log (last 200), ms", "log_ms", "{:.1f}"),
             ("GET …/events?type=status, ms", "statuses_ms", "{:.1f}"),
             ("GET /usage/jobs/{id}, ms", "usage_ms", "{:.1f}"),
             ("GET …/artifacts, ms", "artifacts_ms", "{:.1f}"),
             ("GET …/metrics/series, live, ms", "series_live_ms", "{:.1f}"),
             ("GET …/metrics/series, summary, ms", "series_ms", "{:.1f}"),
             ("  CPU ms, live / summary", "series_cpu", "{}"),
             ("summarise (housekeeping, once), ms", "summarise_ms", "{:.1f}"),
             ("page, aggregated live (before), ms", "page_live_ms", "{:.1f}"),
             ("  CPU ms of the API process", "page_live_cpu_ms", "{:.1f}"),
             ("page, from the summary, ms", "page_ms", "{:.1f}"),
             ("  CPU ms of the API process", "page_cpu_ms", "{:.1f}"),
             ("page as raw SQL, live, ms", "raw_page_live_ms", "{:.1f}"),
             ("page as raw SQL, summary, ms", "raw_page_ms", "{:.1f}"),
             ("every loss value (full=true), ms", "full_loss_ms", "{:.0f}")]


def print_page(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nA finished job's page: {args.points:,} metric values, p50 of {args.runs} loads\n")
    print(f"{'':34}" + "".join(f"{r['db']:>14}" for r in results))
    for title, key, fmt in PAGE_ROWS:
        print(f"{title:34}" + "".join(f"{fmt.format(r[key]):>14}" for r in results))
    print(f"{'page / raw SQL, summary (goal ≤ 3×)':34}"
          + "".join(f"{r['page_ms'] / r['raw_page_ms']:>13.1f}×" for r in results))
    for r in results:
        if r["page_ms"] >= 100:
            print(f"  !! {r['db']}: the page took {r['page_ms']:.1f} ms at p50 (goal < 100 ms)")


def print_lab(results: list[dict[str, Any]], args: argparse.Namespace, verbose: bool) -> bool:
    """The lab table; returns False when a hot read scans a large table."""
    first = results[0]["rows"]
    print(f"\nThe lab's reads: {first['jobs']:,} jobs, {first['job_events']:,} events, {first['job_metrics']:,} "
          f"metric values, {first['device_samples']:,} device samples; p50 of {args.runs}, ms\n")
    print("ratio: API p50 / raw SQL p50 (goal ≤ 3×); beyond floor: (API − GET /me) / raw SQL\n")
    print(f"{'':36}" + "".join(f"{r['db'] + ' API':>16}{'raw SQL':>9}{'ratio':>8}{'beyond floor':>13}"
                               for r in results))
    ok = True
    by_db: list[list[Measured]] = [r["lab"] for r in results]
    for i, m0 in enumerate(by_db[0]):
        line = f"{m0.read.name:36}"
        for ms in by_db:
            m, floor = ms[i], ms[0].api_ms
            beyond = max(0.0, m.api_ms - floor) / m.raw_ms if m.raw_ms else float("inf")
            line += f"{m.api_ms:>16.1f}{m.raw_ms:>9.1f}{m.ratio:>7.1f}{'!' if m.ratio > 3 else ' '}{beyond:>12.1f}×"
        print(line)
    for r in results:
        print(f"\n{r['db']}: built in {r['build_s']:.0f} s, {r['folded']:,} final jobs folded in {r['fold_s']:.0f} s; "
              "plans of the API's statements")
        for m in r["lab"]:
            if m.scans and not m.read.scans_by_design:
                ok = False
                print(f"  !! {m.read.name} scans a large table: {m.scans}")
            elif m.scans:
                print(f"  {m.read.name} reads every row by design ({m.read.scans_by_design}): {m.scans}")
            if verbose or (m.scans and not m.read.scans_by_design):
                for plan in m.plans:
                    print("    " + plan.replace("\n", "\n      "))
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=8, help="hosts of 8 GPUs, each with 30 days of samples")
    parser.add_argument("--points", type=int, default=100_000, help="metric values of the job page's job")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5,000 jobs, one host, 10,000 points, 5 runs")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--page-only", action="store_true", help="only the job page's job and reads (a minute)")
    parser.add_argument("--only", help="only the lab's reads whose names hold one of these (comma-separated)")
    parser.add_argument("--plans", action="store_true", help="print every plan, not only the bad ones")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.hosts, args.points, args.runs = 5000, 1, 10_000, 5
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(bench_database("SQLite", f"sqlite:///{Path(tmp) / 'reads.sqlite3'}", args))
    if not args.sqlite_only:
        url, name = services.create_pg_database()
        try:
            results.append(bench_database("PostgreSQL", url, args))
        finally:
            services.drop_pg_database(name)
    print_page(results, args)
    ok = args.page_only or print_lab(results, args, args.plans)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
