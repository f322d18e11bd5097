"""The HTTP floor and a submit's own cost, in one process: no client process, no worker, no broker hop.

    python -m bench.api_floor [--runs 300] [--postgres] [--profile]

The API runs in this process behind httpx's ASGI transport (uvicorn's parsing is left out);
a device is registered directly and each submitted job is finished directly, so every
submit finds the queue empty and places its own job, as on an idle lab. Prints p50/p99 of
GET /me, GET /jobs/{id} and POST /jobs, with the SQL statements and commits each sends, and
the same token lookup in raw SQL (one SELECT on a connection of its own). `--profile`
prints cProfile's top functions of the submits' handlers: the thread of the pool each runs in,
where a submit's own work is (a profiler sees only the thread it runs in; the event loop's part
is the HTTP floor, GET /me's).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
from sqlalchemy import event, text

from migrations.migrate import upgrade
from service.api import routing
from service.api.app import create_app
from service.db import Database
from service.models import JobStatus
from service.security import hash_token
from service.settings import Settings
from service.store.devices import register_worker
from service.store.jobs import claim_job, finish_job
from service.store.users import create_user
from tests.support import services


class Counter:
    """SQL statements and commits sent through an engine."""

    def __init__(self, db: Database):
        self.statements = self.commits = 0
        event.listen(db.engine, "before_cursor_execute", self._statement)
        event.listen(db.engine, "commit", self._commit)

    def _statement(self, *_: Any) -> None:
        self.statements += 1

    def _commit(self, *_: Any) -> None:
        self.commits += 1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def finish(db: Database, job: dict[str, Any]) -> None:
    """End a job the submit dispatched, so that the next submit finds the queue empty."""
    with db.writing() as s:
        claim_job(session=s, job_id=job["id"], attempt=job["attempt"], device_id=job["device_id"],
                  worker_id="bench-worker", pid=1)
    with db.writing() as s:
        finish_job(session=s, job_id=job["id"], attempt=job["attempt"], status=JobStatus.succeeded)


class HandlerProfile:
    """cProfile of the sync handlers a Route runs in the thread pool, while `active`."""

    def __init__(self) -> None:
        self.profile, self.active = cProfile.Profile(), False
        self._run = routing.run_in_threadpool

    async def run_in_threadpool(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        if self.active:
            return await self._run(self.profile.runcall, func, *args, **kwargs)
        return await self._run(func, *args, **kwargs)

    def enable(self) -> None:
        self.active = True

    def disable(self) -> None:
        self.active = False


async def measure(client: httpx.AsyncClient, db: Database, counter: Counter, token: str,
                  runs: int, profile: HandlerProfile | None) -> dict[str, tuple[float, ...]]:
    auth = {"Authorization": f"Bearer {token}"}
    out = {}
    times: dict[str, list[float]] = {"GET /me": [], "GET /jobs/{id}": [], "POST /jobs": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    counts: dict[str, list[tuple[int, int]]] = {k: [] for k in times}

    async def timed(name: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
        s0, c0 = counter.statements, counter.commits
        t0, c0_cpu = time.perf_counter(), time.process_time()
        if profile and name == "POST /jobs":
            profile.enable()
        r = await client.request(method, path, headers=auth, **kw)
        if profile:
            profile.disable()
        times[name].append(time.perf_counter() - t0)
        cpu[name].append(time.process_time() - c0_cpu)
        counts[name].append((counter.statements - s0, counter.commits - c0))
        assert r.status_code < 300, r.text
        return r.json()

    job_id = 0
    for i in range(runs + 10):  # the first ten warm up
        await timed("GET /me", "GET", "/me")
        job = await timed("POST /jobs", "POST", "/jobs", json={"kind": "test-echo", "params": {"lines": 0}})
        assert job["status"] == JobStatus.dispatched, job
        finish(db, job)
        job_id = job["id"]
        await timed("GET /jobs/{id}", "GET", f"/jobs/{job_id}")
        if i == 9:
            for v in (*times.values(), *cpu.values(), *counts.values()):
                v.clear()
    for name, values in times.items():
        n = counts[name][-1]
        out[name] = (1000 * statistics.median(values), 1000 * pct(values, 0.99),
                     1000 * statistics.mean(cpu[name]), *n)
    raw = []
    with db.engine.connect() as conn:
        lookup = text("SELECT users.id FROM users JOIN tokens ON tokens.user_id = users.id "
                      "WHERE tokens.token_hash = :h AND tokens.revoked_at IS NULL")
        for _ in range(runs):
            t0 = time.perf_counter()
            conn.execute(lookup, {"h": hash_token(token)}).all()
            raw.append(time.perf_counter() - t0)
    out["raw SQL token lookup"] = (1000 * statistics.median(raw), 1000 * pct(raw, 0.99), float("nan"), 1, 0)
    return out


def bench(url: str, runs: int, profile: bool) -> dict[str, tuple[float, ...]]:
    upgrade(url)
    state = Path(tempfile.mkdtemp(prefix="gpulab-bench-floor-"))
    settings = Settings(database_url=url, redis_url=f"{services.REDIS_BASE_URL}/1", state_dir=state,
                        host="bench")
    app = create_app(settings)
    db: Database = app.state.gpulab.db
    with db.writing() as s:
        _, token = create_user(session=s, name="floor")
    with db.writing() as s:
        register_worker(session=s, worker_id="bench-worker", pid=1, slots=1,
                        device={"id": "bench/cpu", "host": "bench", "kind": "cpu", "index": 0, "name": "cpu"})
    counter = Counter(db)
    prof = HandlerProfile() if profile else None

    async def go() -> dict[str, tuple[float, ...]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            return await measure(client, db, counter, token, runs, prof)

    try:
        with mock.patch.object(routing, "run_in_threadpool", prof.run_in_threadpool) if prof else nullcontext():
            return asyncio.run(go())
    finally:
        if prof:
            pstats.Stats(prof.profile).sort_stats("cumulative").print_stats(45)
        db.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL too (the test server)")
    parser.add_argument("--profile", action="store_true", help="cProfile the submits (SQLite)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gpulab-bench-floor-"))
    results = {"SQLite": bench(f"sqlite:///{tmp / 'gpulab.sqlite3'}", args.runs, args.profile)}
    if args.postgres:
        url, name = services.create_pg_database()
        try:
            results["PostgreSQL"] = bench(url, args.runs, False)
        finally:
            services.drop_pg_database(name)
    print(f"in-process API, {args.runs} runs: p50 / p99 ms, mean CPU ms of the process (all threads), "
          "SQL statements, commits")
    for db, rows in results.items():
        for name, (p50, p99, cpu_ms, statements, commits) in rows.items():
            print(f"{db:11}{name:24}{p50:8.2f}{p99:8.2f}{cpu_ms:8.2f}{statements:6}{commits:4}")


if __name__ == "__main__":
    main()
