"""The worker's per-job cycle in one process: claim, run, record, finish, place and send the next.

    python -m bench.worker_cycle [--jobs 80] [--no-postgres] [--profile]

Runs a worker child's JobRunner over back-to-back empty jobs (test-echo, 0 lines, 0 steps),
the finish of each placing the next, as on a device with a queue: what the database and
Redis cost a job on the worker's side, without HTTP, the broker or the other processes of
bench.dispatch. It counts SQL statements, commits and Redis round trips per job (exact,
whatever the load) and times each job in CPU seconds (process_time) and wall seconds; on a
shared machine read the CPU time and the counts, not the wall time. --profile also prints where
the timed jobs' time went (cProfile, which inflates the times it prints beside it).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import event

from migrations.migrate import upgrade
from service.db import Database
from service.live import Publisher, read_installation, use_installation
from service.models import Job
from service.scheduling.device_request import request_fields
from service.scheduling.starting import SHORT_QUEUE, place_pending
from service.settings import Settings
from service.store.devices import register_worker
from service.store.users import create_user
from tests.support import services
from worker.device import cpu_info
from worker.runner import JobRunner

WARM_UP = 5  # the first jobs pay the child's imports (torch, the kind) and caches


class Broker:
    """Stands in for Celery: keeps what a finish sent, for the next turn of the loop."""

    def __init__(self) -> None:
        self.sent: deque[tuple[int, int]] = deque()

    def send_task(self, name: str, args: list[int], **_: Any) -> None:
        job_id, attempt = args
        self.sent.append((job_id, attempt))


def count_round_trips(counts: Counter[str]) -> None:
    """Count each Redis command, and each pipeline as one round trip."""
    command, pipeline = redis.Redis.execute_command, redis.client.Pipeline.execute

    def one(self: redis.Redis, *args: Any, **kwargs: Any) -> Any:
        counts["redis round trips"] += 1
        return command(self, *args, **kwargs)

    def piped(self: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
        counts["redis round trips"] += 1
        return pipeline(self, *args, **kwargs)

    redis.Redis.execute_command = one  # type: ignore[method-assign]
    redis.client.Pipeline.execute = piped  # type: ignore[method-assign]


def run(url: str, jobs: int, *, profile: bool = False) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="gpulab-cycle-"))
    upgrade(url)
    settings = Settings(database_url=url, redis_url=services.redis_url(11), state_dir=tmp, host="testhost")
    db = Database.from_settings(settings)
    with db.reading() as session:
        use_installation(read_installation(session))
    Publisher(settings.redis_url).attach(db.read, db.write)
    device = cpu_info("testhost")
    total = WARM_UP + jobs
    assert total <= SHORT_QUEUE, "a longer queue is left to the dispatcher: no finish would place"
    with db.writing() as session:
        member, _ = create_user(session=session, name="bench")
        register_worker(session=session, worker_id="bench", device=device.as_dict(), pid=os.getpid(), slots=1)
        session.add_all(Job(owner_id=member.id, kind="test-echo", params={"lines": 0, "steps": 0},
                            **request_fields("cpu"), timeout_s=60, max_attempts=1) for _ in range(total))
        session.commit()
    broker = Broker()
    with db.writing() as session:
        broker.sent.extend((d.job_id, d.attempt) for d in place_pending(session=session, settings=settings))
        session.commit()
    runner = JobRunner(settings=settings, db=db, device=device, worker_id="bench", celery=broker)  # type: ignore[arg-type]
    for _ in range(WARM_UP):
        runner.run(*broker.sent.popleft())

    counts: Counter[str] = Counter()
    event.listen(db.engine, "before_cursor_execute", lambda *_: counts.update(["SQL statements"]))
    event.listen(db.engine, "commit", lambda *_: counts.update(["commits"]))
    count_round_trips(counts)
    cpu, wall = [], []
    profiler = cProfile.Profile() if profile else None
    for _ in range(jobs):
        c, w = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        runner.run(*broker.sent.popleft())
        if profiler is not None:
            profiler.disable()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    db.engine.dispose()
    if profiler is not None:
        print(f"\n{url.split(':')[0]}: where {jobs} jobs' time went")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    return {**{k: v / jobs for k, v in counts.items()},
            "CPU ms per job (median)": 1000 * statistics.median(cpu),
            "wall ms per job (median)": 1000 * statistics.median(wall)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=80, help="jobs timed, after the warm-up")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the timed jobs")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gpulab-cycle-"))
    results = {"SQLite": run(f"sqlite:///{tmp / 'gpulab.sqlite3'}", args.jobs, profile=args.profile)}
    if not args.no_postgres:
        url, name = services.create_pg_database()
        try:
            results["PostgreSQL"] = run(url, args.jobs, profile=args.profile)
        finally:
            services.drop_pg_database(name)
    redis.Redis.from_url(services.redis_url(11)).flushdb()
    print(f"worker cycle, {args.jobs} empty jobs back to back (load {os.getloadavg()[0]:.1f})")
    print(f"{'per job':28}" + "".join(f"{db:>12}" for db in results))
    for key in results["SQLite"]:
        print(f"{key:28}" + "".join(f"{r.get(key, 0):>12.1f}" for r in results.values()))


if __name__ == "__main__":
    main()
