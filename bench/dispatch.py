"""Submit → start latency and throughput of gpulab, beside raw Celery on the same Redis.

    python -m bench.dispatch [--jobs 40] [--burst 40] [--no-postgres] [--celery-tools]

Starts a real stack (API, dispatcher, one CPU worker) on SQLite, then on PostgreSQL, and a
bare Celery worker, then prints p50/p99 latency, the milliseconds each hop adds, jobs/s
with one slot and with two (the burst submitted a request per job, then as one POST /jobs/batch,
as a sweep is), the idle gap between back-to-back jobs on one device, the CPU
time a job of the one-slot burst costs the server's processes (API, dispatcher, worker
parent and child; raw Celery's worker and its sender), and ratios against the baseline
measured in the same run. On a shared machine the CPU time moves less with the load than the
latencies and jobs/s do (the API's part includes this client's polls of each job, more of them
when jobs are slower): compare runs alternated in the same minutes all the same. Needs the test kinds (./dev test
installs them) and, for the PostgreSQL column, the test PostgreSQL server.
--celery-tools also measures what Celery's remote control and task events cost: bare Celery
with remote control off, and with events on; gpulab with GPULAB_CELERY_EVENTS=true.
"""

from __future__ import annotations

import argparse
import os
import signal
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


def session_cpu_s(sessions: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) of the live processes of each of these sessions (a stack's
    part and its children: each part starts a session of its own)."""
    total = dict.fromkeys(sessions, 0)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, session, ..., utime (12th), stime (13th).
        if int(fields[3]) in total:
            total[int(fields[3])] += int(fields[11]) + int(fields[12])
    return {sid: ticks / os.sysconf("SC_CLK_TCK") for sid, ticks in total.items()}


def burst_gpulab(stack: Stack, burst: int, *,
                 batch: bool = False) -> tuple[float, list[float], dict[str, float], float]:
    """Jobs/s of a burst, submit of the first to end of the last as the database records
    them, the idle gaps (s) between one job's end and the next one's start, and the CPU
    seconds per job of each of the stack's parts over the burst, and the jobs/s the client's
    submits were answered at. `batch`: the burst is one POST /jobs/batch (a sweep), else a
    POST /jobs per job."""
    parts = {proc.pid: name.split("-")[0] for name, proc in stack.procs.items()}
    cpu0 = session_cpu_s(set(parts))
    t0 = time.time()
    if batch:
        body = {"jobs": [{"kind": "test-echo", "params": {"lines": 0, "steps": 0}}] * burst}
        ids = [j["id"] for j in stack.api("POST", "/jobs/batch", json=body, expect=201)["jobs"]]
    else:
        ids = [stack.submit("test-echo", {"lines": 0, "steps": 0})["id"] for _ in range(burst)]
    submitted = time.time() - t0
    jobs = [stack.wait_for(job_id, timeout=300) for job_id in ids]
    cpu1 = session_cpu_s(set(parts))
    cpu = {name: (cpu1[sid] - cpu0[sid]) / burst for sid, name in parts.items()}
    runs = sorted((ts(j["started_at"]), ts(j["finished_at"])) for j in jobs)
    gaps = [start - end for (_, end), (start, _) in zip(runs, runs[1:], strict=False)]
    return burst / (max(end for _, end in runs) - t0), gaps, cpu, burst / submitted


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
    out = {f"{k}_p50_ms": 1000 * statistics.median(v) for k, v in hops.items()}
    out["total_p99_ms"] = 1000 * pct(hops["total"], 0.99)
    out["jobs_per_s"], gaps, cpu, out["submits_per_s"] = burst_gpulab(stack, burst)
    out["cpu_ms_per_job"] = 1000 * sum(cpu.values())
    out.update({f"cpu_{name}_ms": 1000 * s for name, s in cpu.items()})
    out["gap_p50_ms"] = 1000 * statistics.median(gaps)
    out["jobs_per_s_batch"], _, cpu, out["submits_per_s_batch"] = burst_gpulab(stack, burst, batch=True)
    out["batch_ms_per_job"] = 1000 * sum(cpu.values())
    out.update({f"batch_{name}_ms": 1000 * s for name, s in cpu.items()})
    # A second slot on the same device: two jobs run at once, so no gap is measured.
    stack.kill("worker-testhost/cpu", signal.SIGTERM)
    stack.add_worker("cpu", slots=2)
    for job_id in [stack.submit("test-echo", {"lines": 0, "steps": 0})["id"] for _ in range(4)]:
        stack.wait_for(job_id)  # warm-up: each new child pays its imports once
    out["jobs_per_s_2"], _, _, _ = burst_gpulab(stack, burst)
    out["jobs_per_s_2_batch"], _, _, _ = burst_gpulab(stack, burst, batch=True)
    return out


def bench_raw(redis_url: str, n: int, burst: int, *, remote_control: bool = True,
              events: bool = False, slots: int = 1) -> dict[str, float]:
    flags = {"BENCH_REDIS_URL": redis_url, "BENCH_REMOTE_CONTROL": "1" if remote_control else "0",
             "BENCH_EVENTS": "1" if events else "0"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.raw_celery_app", "worker", "-P", "prefork", "-c", str(slots),
         "--without-mingle", "--without-gossip", *([] if events else ["--without-heartbeat"]), "-l", "WARNING"],
        env={**os.environ, **flags}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
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
        cpu0, own0 = session_cpu_s({worker.pid})[worker.pid], time.process_time()
        t0 = time.time()
        keys = [f"b{i}" for i in range(burst)]
        for key in keys:
            run(key)
        sent = time.process_time() - own0  # the sender's part (the wait below polls Redis)
        wait(keys)
        elapsed = time.time() - t0
        cpu = (session_cpu_s({worker.pid})[worker.pid] - cpu0 + sent) / burst
    finally:
        worker.terminate()
        worker.wait(10)
    return {"total_p50_ms": 1000 * statistics.median(latencies), "total_p99_ms": 1000 * pct(latencies, 0.99),
            "jobs_per_s": burst / elapsed, "cpu_ms_per_job": 1000 * cpu}


def run_gpulab(n: int, burst: int, env: dict[str, str] | None = None, *, postgres: bool = False) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="gpulab-bench-"))
    url, pg_name = services.create_pg_database() if postgres else (f"sqlite:///{tmp / 'gpulab.sqlite3'}", "")
    # The bench reads latency from the database, not from a faster poll: default tick/flush.
    stack = Stack(database_url=url, redis_url=services.redis_url(13),
                  state_dir=tmp, env={"GPULAB_DISPATCHER_TICK_S": "2", "GPULAB_EVENT_FLUSH_S": "0.5", **(env or {})})
    stack.start()
    try:
        return bench_gpulab(stack, n, burst)
    finally:
        stack.stop()
        redis.Redis.from_url(services.redis_url(13)).flushdb()
        if pg_name:
            services.drop_pg_database(pg_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40, help="sequential jobs for latency")
    parser.add_argument("--burst", type=int, default=40, help="jobs submitted at once for throughput")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--celery-tools", action="store_true",
                        help="also measure remote control off and task events on")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    g = {"SQLite": run_gpulab(args.jobs, args.burst)}
    if not args.no_postgres:
        g["PostgreSQL"] = run_gpulab(args.jobs, args.burst, postgres=True)
    r = bench_raw(services.redis_url(12), args.jobs, args.burst)
    r["jobs_per_s_2"] = bench_raw(services.redis_url(12), args.jobs, args.burst, slots=2)["jobs_per_s"]
    print(f"gpulab dispatch benchmark: {args.jobs} sequential jobs, a burst of {args.burst}, one CPU worker; "
          f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print(f"{'':30}{'raw celery':>11}" + "".join(f"{db:>11}{'ratio':>7}" for db in g))
    for key, label in (("total_p50_ms", "submit → start p50 (ms)"), ("total_p99_ms", "submit → start p99 (ms)"),
                       ("jobs_per_s", "end-to-end jobs/s, 1 slot"), ("jobs_per_s_2", "end-to-end jobs/s, 2 slots")):
        print(f"{label:30}{r[key]:>11.1f}" + "".join(f"{m[key]:>11.1f}{m[key] / r[key]:>7.2f}" for m in g.values()))
    # The same bursts as one POST /jobs/batch (a sweep), against the same raw Celery burst.
    for key, base, label in (("jobs_per_s_batch", "jobs_per_s", "  same, one batch request"),
                             ("jobs_per_s_2_batch", "jobs_per_s_2", "  2 slots, one batch request")):
        print(f"{label:30}{r[base]:>11.1f}" + "".join(f"{m[key]:>11.1f}{m[key] / r[base]:>7.2f}" for m in g.values()))
    print(f"{'CPU ms per job, 1-slot burst':30}{r['cpu_ms_per_job']:>11.1f}" + "".join(
        f"{m['cpu_ms_per_job']:>11.1f}{m['cpu_ms_per_job'] / r['cpu_ms_per_job']:>7.2f}" for m in g.values()))
    print(f"{'  same, one batch request':30}{r['cpu_ms_per_job']:>11.1f}" + "".join(
        f"{m['batch_ms_per_job']:>11.1f}{m['batch_ms_per_job'] / r['cpu_ms_per_job']:>7.2f}"
        for m in g.values()))
    print(f"{'idle gap between jobs p50 (ms)':30}{'':>11}" + "".join(f"{m['gap_p50_ms']:>11.1f}{'':>7}"
                                                                  for m in g.values()))
    for db, m in g.items():
        print(f"hops of gpulab's p50 on {db} (ms): " + ", ".join(
            f"{k} {m[f'{k}_p50_ms']:.1f}" for k in ("http+insert", "wake+dispatch", "broker+claim")))
        for what, prefix in (("a request per job", "cpu_"), ("one batch", "batch_")):
            print(f"CPU ms per job of gpulab's parts on {db}, {what}: " + ", ".join(
                f"{k[len(prefix):-3]} {v:.1f}" for k, v in m.items()
                if k.startswith(prefix) and k not in ("cpu_ms_per_job", "batch_ms_per_job")))
        print(f"the burst's submits answered on {db}: {m['submits_per_s']:.0f} jobs/s a request per job, "
              f"{m['submits_per_s_batch']:.0f} jobs/s as one batch")
    if not args.celery_tools:
        return
    runs = {
        "raw, remote control off": bench_raw(services.redis_url(12), args.jobs, args.burst, remote_control=False),
        "raw, remote control on (as gpulab)": r,
        "raw, remote control + events on": bench_raw(services.redis_url(12), args.jobs, args.burst, events=True),
        "gpulab (remote control on)": g["SQLite"],
        "gpulab, GPULAB_CELERY_EVENTS=true": run_gpulab(args.jobs, args.burst, {"GPULAB_CELERY_EVENTS": "true"}),
    }
    print(f"\nCelery's tools: {'':28}{'p50 ms':>8}{'p99 ms':>8}{'jobs/s':>8}")
    for label, m in runs.items():
        print(f"{label:44}{m['total_p50_ms']:>8.1f}{m['total_p99_ms']:>8.1f}{m['jobs_per_s']:>8.1f}")


if __name__ == "__main__":
    main()
