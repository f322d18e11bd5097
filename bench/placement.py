"""Dispatcher decision time: 10,000 pending jobs on 64 devices, with a mix of requests.

    python -m bench.placement [--jobs 10000] [--devices 64] [--history 20000] [--repeat 5] [--gangs 0.1]
                              [--postgres postgresql://postgres@127.0.0.1:5432/test]

Two measurements, each beside its baseline in the same run:
- `place()` alone (the pure policy), and the same pass without its per-pass caches;
- a whole dispatcher read on SQLite, and on PostgreSQL with `--postgres` (a scratch database
  is created on that server and dropped after) (`plan_queue`: pending jobs, device load,
  fair-share usage over `--history` finished jobs, member loads, then `place()`), and its parts.
Goal: ≤ 10 ms per placement. A pass decides every pending job (placed, or why it waits),
so both the pass time and the time per placement are printed. `--gangs` is the share of
pending jobs that ask for 2, 4 or 8 GPUs of one host (default 10 %); they hold devices as
they wait and the rest backfill around them by their time limits.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, literal, select, true

from migrations.migrate import upgrade
from service.db import Database
from service.models import Allocation, Device, Job, JobStatus, User, utcnow
from service.scheduling.device_request import DeviceRequest, parse_device_request, request_fields
from service.scheduling.fairshare import UsageCache, member_usage
from service.scheduling.placement import _Pass, place, start_order
from service.scheduling.queue_state import device_rooms, pending_jobs, plan_queue
from service.scheduling.rooms import DeviceRoom, MemberLimits, QueuedJob
from service.settings import Settings

GB = 1024
OWNERS = 30


def make_devices(n: int, rng: random.Random) -> list[dict]:
    """n GPUs over hosts of 8: H100 80 GB and A100 40 GB, some shared, a few draining or offline."""
    out = []
    for i in range(n):
        host, index = f"node{i // 8:02d}", i % 8
        h100 = (i // 8) % 2 == 0
        state = "draining" if i % 29 == 7 else "offline" if i % 31 == 5 else "online"
        out.append({"id": f"{host}/cuda:{index}", "host": host, "kind": "cuda", "index": index,
                    "name": "NVIDIA H100 80GB HBM3" if h100 else "NVIDIA A100-SXM4-40GB",
                    "memory_total_mb": (80 if h100 else 40) * GB, "slots": rng.choice([1, 1, 2, 4]), "state": state})
    return out


def make_request(devices: list[dict], rng: random.Random) -> tuple[str, float | None]:
    """A device request and a declared memory, in roughly a lab's proportions."""
    r = rng.random()
    memory = rng.choice([None, None, 4.0, 8.0, 16.0, 30.0])
    if r < 0.40:
        return "gpu", memory
    if r < 0.60:
        return rng.choice(devices)["id"], memory
    if r < 0.75:
        return "model=H100", memory
    if r < 0.85:
        return "min_memory_gb=40", memory
    return "model=A100", memory


def make_gang(rng: random.Random) -> tuple[str, int]:
    """A gang's request: any GPU or a model, 2, 4 or 8 of them, alone on each."""
    return rng.choice(["gpu", "gpu", "model=H100", "model=A100"]), rng.choice([2, 2, 4, 8])


def parse(text: str) -> DeviceRequest:
    return parse_device_request(text, default_host="")


def pure_bench(n_jobs: int, n_devices: int, repeat: int, seed: int, gangs: float) -> None:
    rng = random.Random(seed)
    specs = make_devices(n_devices, rng)
    rooms = [DeviceRoom(id=d["id"], kind="cuda", name=d["name"], state=d["state"], slots=d["slots"],
                        memory_total_mb=d["memory_total_mb"]) for d in specs]
    # A third of the devices already run something.
    for room in rooms[::3]:
        room.jobs, room.declared_mb, room.ends_in_s = 1, 8.0 * GB, rng.uniform(60, 3600)
    usage = {owner: rng.choice([0.0, 60.0, 3600.0, 86400.0]) for owner in range(OWNERS)}
    jobs = []
    for job_id in range(1, n_jobs + 1):
        text, memory = make_request(specs, rng)
        gpus = 1
        if rng.random() < gangs:
            (text, gpus), memory = make_gang(rng), None
        owner = rng.randrange(OWNERS)
        jobs.append(QueuedJob(id=job_id, owner_id=owner, request=parse(text), gpu_memory_gb=memory,
                              priority=rng.choice([0] * 9 + [10]), usage=usage[owner], gpus=gpus,
                              timeout_s=rng.choice([600, 3600, 4 * 3600])))

    def run(cached: bool) -> tuple[float, int]:
        times, placed = [], 0
        for _ in range(repeat):
            devices = [dataclasses.replace(r) for r in rooms]
            t0 = time.perf_counter()
            ordered = start_order(jobs)
            if cached:
                plan = place(ordered, devices)
            else:
                p = _Pass(devices, MemberLimits(), {})
                p.outlooks, p.gangs_seen = _NoCache(), _NoCache()
                plan = p.run(ordered, {})
            times.append(time.perf_counter() - t0)
            placed = len(plan.placements)
        return statistics.median(times), placed

    print(f"place(): {n_jobs} pending jobs ({gangs:.0%} gangs), {n_devices} GPUs "
          f"({sum(r.state == 'online' for r in rooms)} online), {OWNERS} members, median of {repeat}")
    for label, cached in (("with per-pass caches", True), ("baseline: no per-class caches", False)):
        total, placed = run(cached)
        print(f"  {label:32s} pass {1000 * total:8.1f} ms   placements {placed:3d}   "
              f"{1000 * total / max(placed, 1):6.2f} ms/placement   {1e6 * total / n_jobs:6.1f} µs/job")


class _NoCache(dict):
    def get(self, key, default=None):  # type: ignore[no-untyped-def]
        return default


@contextlib.contextmanager
def scratch_database(postgres: str | None) -> Iterator[tuple[str, str, Path]]:
    """(SQLAlchemy URL, its name for people, a scratch folder): a SQLite file, or a PostgreSQL
    database created on the `postgres` server (an admin URL) and dropped after."""
    tmp = Path(tempfile.mkdtemp(prefix="gpulab-bench-"))
    if postgres is None:
        yield f"sqlite:///{tmp / 'bench.sqlite3'}", "SQLite", tmp
        return
    import psycopg

    name = f"gpulab_bench_{os.getpid()}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = postgres.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{base}/{name}", "PostgreSQL", tmp
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def db_bench(n_jobs: int, n_devices: int, history: int, repeat: int, seed: int, gangs: float,
             postgres: str | None = None) -> None:
    with scratch_database(postgres) as (url, label, tmp):
        _db_bench(url, label, tmp, n_jobs, n_devices, history, repeat, seed, gangs)


def _db_bench(url: str, label: str, tmp: Path, n_jobs: int, n_devices: int, history: int, repeat: int, seed: int,
              gangs: float) -> None:
    rng = random.Random(seed)
    upgrade(url)
    settings = Settings(database_url=url, state_dir=tmp, host="bench")
    db = Database.from_settings(settings)
    specs = make_devices(n_devices, rng)
    now = utcnow()
    with db.writing() as s:
        s.execute(insert(User), [{"id": i + 1, "name": f"member{i}"} for i in range(OWNERS)])
        s.execute(insert(Device), specs)
        rows = []
        for _ in range(history):  # finished jobs over the last four weeks: the fair-share history
            d = rng.choice(specs)
            end = now - timedelta(seconds=rng.uniform(0, 28 * 86400))
            rows.append(dict(owner_id=rng.randrange(OWNERS) + 1, kind="bench", params={}, **request_fields("gpu"),
                             timeout_s=3600, status=JobStatus.succeeded, device_id=d["id"],
                             gpu_memory_gb=rng.choice([None, 8.0]), created_at=end,
                             started_at=end - timedelta(seconds=rng.uniform(10, 7200)), finished_at=end))
        for d in specs[::3]:  # something runs on a third of the devices
            rows.append(dict(owner_id=rng.randrange(OWNERS) + 1, kind="bench", params={}, **request_fields(d["id"]),
                             timeout_s=3600, status=JobStatus.running, device_id=d["id"], gpu_memory_gb=8.0,
                             created_at=now, started_at=now - timedelta(seconds=60)))
        for _ in range(n_jobs):
            text, memory = make_request(specs, rng)
            gpus = 1
            if rng.random() < gangs:
                (text, gpus), memory = make_gang(rng), None
            rows.append(dict(owner_id=rng.randrange(OWNERS) + 1, kind="bench", params={}, **request_fields(text),
                             timeout_s=rng.choice([600, 3600, 4 * 3600]), status=JobStatus.pending,
                             gpu_memory_gb=memory, created_at=now, gpus=gpus, priority=rng.choice([0] * 9 + [10])))
        s.execute(insert(Job), rows)
        # What runs holds its device, as the dispatcher's transaction would have recorded.
        s.execute(insert(Allocation).from_select(
            ["job_id", "device_id", "attempt", "leader", "rank"],
            select(Job.id, Job.device_id, Job.attempt, true(), literal(0)).where(Job.status == JobStatus.running)))
        s.commit()

    def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        """Median wall time and median CPU time of this process (the database server's aside)."""
        walls, cpus = [], []
        for _ in range(repeat):
            with db.reading() as s:
                t0, c0 = time.perf_counter(), time.process_time()
                fn(s)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
        return statistics.median(walls), statistics.median(cpus)

    parts = {
        "read pending jobs": lambda s: pending_jobs(s),
        "read devices and their load": lambda s: device_rooms(s),
        f"fair-share usage, cold ({history} finished)": lambda s: member_usage(
            session=s, half_life_s=settings.fair_share_half_life_s, now=utcnow()),
        "fair-share usage, warm (UsageCache)": lambda s: warm.usage(session=s, now=utcnow()),
    }
    warm = UsageCache(settings.fair_share_half_life_s)
    with db.reading() as s:
        warm.usage(session=s, now=utcnow())
    print(f"\nplan_queue() on {label}: {n_jobs} pending, {n_devices} GPUs, {history} finished jobs, median of "
          f"{repeat}; wall (CPU of this process: on a shared machine, the steadier one)")
    for label, fn in parts.items():
        wall, cpu = timed(fn)
        print(f"  {label:40s} {1000 * wall:8.1f} ms ({1000 * cpu:6.1f})")
    placed = 0

    def whole(s) -> None:  # type: ignore[no-untyped-def]
        nonlocal placed
        placed = len(plan_queue(s, settings=settings).plan.placements)

    wall, cpu = timed(whole)
    print(f"  {'whole pass, warm (read + order + place)':40s} {1000 * wall:8.1f} ms ({1000 * cpu:6.1f})   "
          f"placements {placed}   {1000 * wall / max(placed, 1):.2f} ms/placement "
          f"({1000 * cpu / max(placed, 1):.2f})")
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--history", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gangs", type=float, default=0.10, help="share of pending jobs that ask for 2-8 GPUs")
    parser.add_argument("--postgres", help="also on PostgreSQL: an admin URL of a server to make a scratch database on")
    args = parser.parse_args()
    pure_bench(args.jobs, args.devices, args.repeat, args.seed, args.gangs)
    db_bench(args.jobs, args.devices, args.history, args.repeat, args.seed, args.gangs)
    if args.postgres:
        db_bench(args.jobs, args.devices, args.history, args.repeat, args.seed, args.gangs, postgres=args.postgres)


if __name__ == "__main__":
    main()
