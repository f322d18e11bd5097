"""GET /queue at 10,000 pending on a lab built once and kept, so that two versions of the service
can be measured on the same rows in the same minutes.

    python -m bench.queue_read build sqlite:////tmp/lab.sqlite3 [--quick]   # or a PostgreSQL URL (empty)
    python -m bench.queue_read measure sqlite:////tmp/lab.sqlite3 [--runs 20] [--profile FILE]

`build` writes `bench.reads`' lab at full size (100,000 jobs, the newest 10,000 pending, 8 hosts
× 8 GPUs each running one job) into an empty database, migrated first; `--quick`, a small one (1,000
jobs, 200 pending, one host of 2 GPUs: seconds, for the test that keeps this bench running). `measure` holds the
dispatcher's lease (else every entry reads `dispatcher_down`) and times, in turns with their
raw-SQL twins (`bench.reads_lab`): GET /me (the floor), GET /queue (a page of 500),
GET /queue?me=true, and GET /queue?limit=10000; each API read's CPU time in this process; the
plans of the statements the API sent. Run it with PYTHONPATH at another checkout to measure
that checkout's service on the same lab (the bench's own modules are imported from here only
when this folder comes first on the path: copy `bench/` out to measure an older service).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from bench.reads_data import build_lab
from bench.reads_lab import Read, measure
from migrations.migrate import upgrade
from service.api.app import create_app
from service.db import Database
from service.models import Lease, utcnow
from service.settings import Settings
from service.store.users import issue_token
from tests.support import services

# The raw-SQL twin of a /queue page: the same columns and the same page (500 entries, their
# positions in the whole queue, the total and the reader's count), and the devices with what
# their jobs hold, as a person would write it. It orders by priority and age: fair share (the
# owners' decayed usage, which the API keeps cached) and the wait reasons and next devices (the
# placement simulation) have no SQL to stand for them, so their price is what the ratio shows.
PAGE = ("SELECT j.id, u.name, j.kind, j.device_request, j.priority, j.gpus, j.created_at FROM jobs j "
        "JOIN users u ON u.id = j.owner_id WHERE j.status = 'pending' ORDER BY j.priority DESC, j.id LIMIT {n}")
MINE = ("SELECT * FROM (SELECT j.id, j.owner_id, u.name, j.kind, j.device_request, j.priority, j.gpus, "
        "j.created_at, row_number() OVER (ORDER BY j.priority DESC, j.id) AS position FROM jobs j "
        "JOIN users u ON u.id = j.owner_id WHERE j.status = 'pending') q WHERE q.owner_id = :me "
        "ORDER BY q.position LIMIT {n}")
COUNTS = ("SELECT count(*), count(CASE WHEN owner_id = :me THEN 1 END) FROM jobs WHERE status = 'pending'")
DEVICES = ("SELECT d.*, a.job_id, j.gpu_memory_gb, j.gpus, j.timeout_s, j.started_at FROM devices d "
           "LEFT JOIN allocations a ON a.device_id = d.id LEFT JOIN jobs j ON j.id = a.job_id "
           "AND j.status IN ('dispatched', 'running') ORDER BY d.id")


def queue_reads(me: int) -> list[Read]:
    """GET /me and three /queue reads, each beside its twin."""
    def twin(page: str, n: int) -> list[tuple[str, dict[str, int]]]:
        return [(page.format(n=n), {"me": me}), (COUNTS, {"me": me}), (DEVICES, {})]
    return [Read("GET /me (the floor)", "/me", [("SELECT id, name, is_admin FROM users WHERE id = :me", {"me": me})]),
            Read("GET /queue (500 of 10,000)", "/queue", twin(PAGE, 500)),
            Read("GET /queue?me=true", "/queue?me=true", twin(MINE, 500)),
            Read("GET /queue?limit=10000", "/queue?limit=10000", twin(PAGE, 10_000))]


def build(url: str, quick: bool = False) -> None:
    upgrade(url)
    db = Database.from_settings(_settings(url))
    t0 = time.perf_counter()
    size = (dict(jobs=1_000, pending=200, members=5, hosts=1, gpus_per_host=2) if quick
            else dict(jobs=100_000, pending=10_000, members=40, hosts=8, gpus_per_host=8))
    lab = build_lab(db.engine, **size)
    print(f"built {lab.rows} in {time.perf_counter() - t0:.0f} s")
    db.engine.dispose()


def _settings(url: str) -> Settings:
    state = Path(tempfile.mkdtemp(prefix="gpulab-bench-queue-"))
    return Settings(database_url=url, redis_url=f"{services.REDIS_BASE_URL}/0", state_dir=state, host="bench")


def run_measure(url: str, runs: int, profile: str | None) -> None:
    app = create_app(_settings(url))
    db: Database = app.state.gpulab.db
    with db.writing() as s:
        s.merge(Lease(name="dispatcher", holder="bench", expires_at=utcnow() + timedelta(hours=1)))
        # A member with a typical share of the pending jobs reads "my jobs".
        me = s.execute(text("SELECT owner_id FROM jobs WHERE status = 'pending' GROUP BY owner_id "
                            "ORDER BY count(*) DESC LIMIT 1 OFFSET 4")).scalar_one()
        name = s.execute(text("SELECT name FROM users WHERE id = :me"), {"me": me}).scalar_one()
        s.commit()
        token = issue_token(session=s, name=name)
    headers = {"Authorization": f"Bearer {token}"}
    reads = queue_reads(me)
    load = os.getloadavg()
    with TestClient(app) as client:
        measured = measure(client, headers, db.engine, reads, runs)
        cpu = {}
        for read in reads:
            times = []
            for _ in range(runs):
                t0 = time.process_time()
                client.get(read.path, headers=headers)
                times.append(1000 * (time.process_time() - t0))
            cpu[read.path] = statistics.median(times)
    if profile:
        profile_threads(app, headers, profile)
    print(f"{db.engine.dialect.name}, load average before {load[0]:.2f} {load[1]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}; p50 of {runs}, ms")
    print(f"{'':30}{'API':>9}{'raw SQL':>9}{'ratio':>8}{'API CPU':>9}")
    for m in measured:
        print(f"{m.read.name:30}{m.api_ms:>9.1f}{m.raw_ms:>9.1f}{m.ratio:>7.1f}×{cpu[m.read.path]:>9.1f}")
        if m.scans:
            print(f"  !! scans a large table: {m.scans}")
    db.engine.dispose()


def profile_threads(app: Any, headers: dict[str, str], path: str) -> None:
    """A cProfile of 10 GET /queue in every thread that serves them, written to `path`.

    The handler runs in the thread pool and the response is made in the event loop's thread:
    a profile of the calling thread alone shows only the client waiting for them.
    """
    profiles: list[cProfile.Profile] = []

    def start(frame: Any, event: str, arg: Any) -> None:  # the first event of each new thread
        # Each thread's CPU time, not the wall clock: on a shared machine a thread waiting for a core
        # would charge the wait to whatever line it was on.
        profiles.append(prof := cProfile.Profile(time.thread_time_ns, 1e-9))
        prof.enable()

    threading.setprofile(start)  # the client's portal and pool threads start inside the block below
    try:
        with TestClient(app) as client:
            client.get("/queue", headers=headers)
            for prof in profiles:
                prof.clear()
            for _ in range(10):
                client.get("/queue", headers=headers)
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    for prof in profiles:
        prof.create_stats()
    pstats.Stats(*profiles).dump_stats(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "measure"))
    parser.add_argument("url", help="SQLAlchemy URL of the lab's database")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="build a small lab (seconds), not the full size")
    parser.add_argument("--profile", help="write a cProfile of 10 GET /queue (every thread that serves them) here")
    args = parser.parse_args()
    if args.action == "build":
        build(args.url, args.quick)
    else:
        run_measure(args.url, args.runs, args.profile)


if __name__ == "__main__":
    main()
