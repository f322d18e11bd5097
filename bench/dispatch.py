"""Submit → start latency and throughput of gpulab, beside raw Celery on the same Redis.

    python -m bench.dispatch [--jobs 40] [--burst 40] [--celery-tools]

Starts a real stack (API, dispatcher, one CPU worker) on SQLite and a bare Celery worker,
then prints p50/p99 latency, the milliseconds each hop adds, jobs/s, and ratios against
the baseline measured in the same run. Needs the test kinds (./dev test installs them).
--celery-tools also measures what Celery's remote control and task events cost: bare Celery
with remote control off, and with events on; gpulab with GPULAB_CELERY_EVENTS=true.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import redis

from tests.support import services
from tests.support.stack import Stack


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def bench_gpulab(stack: Stack, n: int, burst: int) -> dict[str, float]:
    hops: dict[str, list[float]] = {"http+insert": [], "wake+dispatch": [], "broker+claim": [], "total": []}
    for _ in range(3):  # warm-up: the first job pays the child's imports
        stack.wait_for(stack.submit("test-echo", {"lines": 0, "steps": 0})["id"])
    for _ in range(n):
        t0 = time.time()
        job = stack.submit("test-echo", {"lines": 0, "steps": 0})
        done = stack.wait_for(job["id"])
        created, dispatched, started = ts(done["created_at"]), ts(done["dispatched_at"]), ts(done["started_at"])
        hops["http+insert"].append(created - t0)
        hops["wake+dispatch"].append(dispatched - created)
        hops["broker+claim"].append(started - dispatched)
        hops["total"].append(started - t0)
    t0 = time.time()
    ids = [stack.submit("test-echo", {"lines": 0, "steps": 0})["id"] for _ in range(burst)]
    for job_id in ids:
        stack.wait_for(job_id, timeout=300)
    elapsed = time.time() - t0
    out = {f"{k}_p50_ms": 1000 * statistics.median(v) for k, v in hops.items()}
    out["total_p99_ms"] = 1000 * pct(hops["total"], 0.99)
    out["jobs_per_s"] = burst / elapsed
    return out


def bench_raw(redis_url: str, n: int, burst: int, *, remote_control: bool = True,
              events: bool = False) -> dict[str, float]:
    flags = {"BENCH_REDIS_URL": redis_url, "BENCH_REMOTE_CONTROL": "1" if remote_control else "0",
             "BENCH_EVENTS": "1" if events else "0"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.raw_celery_app", "worker", "-P", "prefork", "-c", "1",
         "--without-mingle", "--without-gossip", *([] if events else ["--without-heartbeat"]), "-l", "WARNING"],
        env={**os.environ, **flags}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update(flags)
    import importlib

    import bench.raw_celery_app

    # The sending side's app must match the worker's settings of this run (sent events).
    start = importlib.reload(bench.raw_celery_app).start

    store = redis.Redis.from_url(redis_url)
    try:
        def run(key: str) -> None:
            start.delay(key, time.time())

        def wait(keys: list[str]) -> None:
            deadline = time.time() + 120
            while time.time() < deadline and store.hlen("raw:starts") < len(keys):
                time.sleep(0.001)

        store.delete("raw:starts")
        for i in range(3):
            run(f"w{i}")
        wait(["w0", "w1", "w2"])
        store.delete("raw:starts")
        latencies = []
        for i in range(n):
            run(f"l{i}")
            wait([f"l{i}"])
            sent, began = map(float, store.hget("raw:starts", f"l{i}").decode().split(","))
            latencies.append(began - sent)
            store.delete("raw:starts")
        t0 = time.time()
        keys = [f"b{i}" for i in range(burst)]
        for key in keys:
            run(key)
        wait(keys)
        elapsed = time.time() - t0
    finally:
        worker.terminate()
        worker.wait(10)
    return {"total_p50_ms": 1000 * statistics.median(latencies), "total_p99_ms": 1000 * pct(latencies, 0.99),
            "jobs_per_s": burst / elapsed}


def run_gpulab(n: int, burst: int, env: dict[str, str] | None = None) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="gpulab-bench-"))
    # The bench reads latency from the database, not from a faster poll: default tick/flush.
    stack = Stack(database_url=f"sqlite:///{tmp / 'gpulab.sqlite3'}", redis_url=services.redis_url(13),
                  state_dir=tmp, env={"GPULAB_DISPATCHER_TICK_S": "2", "GPULAB_EVENT_FLUSH_S": "0.5", **(env or {})})
    stack.start()
    try:
        return bench_gpulab(stack, n, burst)
    finally:
        stack.stop()
        redis.Redis.from_url(services.redis_url(13)).flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40, help="sequential jobs for latency")
    parser.add_argument("--burst", type=int, default=40, help="jobs submitted at once for throughput")
    parser.add_argument("--celery-tools", action="store_true",
                        help="also measure remote control off and task events on")
    args = parser.parse_args()
    g = run_gpulab(args.jobs, args.burst)
    r = bench_raw(services.redis_url(12), args.jobs, args.burst)
    print(f"gpulab dispatch benchmark: {args.jobs} sequential jobs, a burst of {args.burst}, one CPU worker")
    print(f"{'':28}{'gpulab':>10}{'raw celery':>12}{'ratio':>8}")
    for key, label in (("total_p50_ms", "submit → start p50 (ms)"), ("total_p99_ms", "submit → start p99 (ms)"),
                       ("jobs_per_s", "end-to-end jobs/s")):
        print(f"{label:28}{g[key]:>10.1f}{r[key]:>12.1f}{g[key] / r[key]:>8.2f}")
    print("hops of gpulab's p50 (ms): " + ", ".join(
        f"{k} {g[f'{k}_p50_ms']:.1f}" for k in ("http+insert", "wake+dispatch", "broker+claim")))
    if not args.celery_tools:
        return
    runs = {
        "raw, remote control off": bench_raw(services.redis_url(12), args.jobs, args.burst, remote_control=False),
        "raw, remote control on (as gpulab)": r,
        "raw, remote control + events on": bench_raw(services.redis_url(12), args.jobs, args.burst, events=True),
        "gpulab (remote control on)": g,
        "gpulab, GPULAB_CELERY_EVENTS=true": run_gpulab(args.jobs, args.burst, {"GPULAB_CELERY_EVENTS": "true"}),
    }
    print(f"\nCelery's tools: {'':28}{'p50 ms':>8}{'p99 ms':>8}{'jobs/s':>8}")
    for label, m in runs.items():
        print(f"{label:44}{m['total_p50_ms']:>8.1f}{m['total_p99_ms']:>8.1f}{m['jobs_per_s']:>8.1f}")


if __name__ == "__main__":
    main()
