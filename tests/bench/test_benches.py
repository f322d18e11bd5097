"""Every benchmark runs, at its smallest, and prints its table.

The numbers are not checked (timings are read from bench/, never asserted); what is checked is
that a benchmark still runs against the service as it is now: one that rots is found when
someone needs its numbers, and the GPU check when a lent GPU's few minutes are already running.
Each runs as a process of its own, as a person runs it, on a Redis of its own: the benchmarks
flush fixed database numbers, which another test process's stacks use on the shared Redis.
"""

from __future__ import annotations

import json
import os
import pstats
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.local_redis import start_local_redis
from tests.support.stack import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    url = f"redis://127.0.0.1:{free_port()}"
    redis = start_local_redis(url, tmp_path_factory.mktemp("bench-redis"))
    try:
        yield {**os.environ, "GPULAB_TEST_REDIS_URL": url, "PYTHONPATH": str(REPO)}
    finally:
        redis.terminate()
        redis.wait(10)


def bench(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    said = f"{done.stdout[-2000:]}{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{said}"
    return done.stdout


def test_worker_cycle(bench_env: dict[str, str]) -> None:
    out = bench(bench_env, "bench.worker_cycle", "--jobs", "5", "--no-postgres")
    assert "SQL statements" in out and "CPU ms per job" in out


def test_api_floor(bench_env: dict[str, str]) -> None:
    out = bench(bench_env, "bench.api_floor", "--runs", "10", "--profile")
    assert "POST /jobs" in out and "GET /me" in out
    assert "(create_job)" in out  # the profile sees the handler's thread, where a submit's work is


def test_placement(bench_env: dict[str, str]) -> None:
    out = bench(bench_env, "bench.placement", "--jobs", "200", "--devices", "8", "--history", "200", "--repeat", "1")
    assert "whole pass" in out


def test_reads(bench_env: dict[str, str]) -> None:
    # It exits 1 when a hot read's plan scans jobs, events or samples: that is checked here too.
    out = bench(bench_env, "bench.reads", "--quick", "--sqlite-only", "--runs", "2")
    assert "GET /jobs/{id}/log" in out and "GET /queue" in out and "GET /usage?since=30d" in out


def test_queue_read(bench_env: dict[str, str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lab.sqlite3'}"
    bench(bench_env, "bench.queue_read", "build", url, "--quick")
    profile = tmp_path / "queue.prof"
    out = bench(bench_env, "bench.queue_read", "measure", url, "--runs", "2", "--profile", str(profile))
    assert "GET /queue?me=true" in out and "scans a large table" not in out
    # The profile sees the thread the handler runs in, not only the client waiting for it.
    assert "queue_page" in "".join(f"{path}:{name}" for path, _, name in pstats.Stats(str(profile)).stats)


def test_dispatch(bench_env: dict[str, str]) -> None:
    out = bench(bench_env, "bench.dispatch", "--jobs", "3", "--burst", "4", "--no-postgres")
    assert "submit → start p50" in out and "idle gap between jobs" in out


def test_gpu_check_plumbing_on_a_cpu(bench_env: dict[str, str], tmp_path: Path) -> None:
    """The script a lent GPU runs once: here on a CPU worker, its GPU-only checks skipped."""
    out = bench(bench_env, "bench.gpu_check", "--allow-cpu", "--skip-pytest", "--out", str(tmp_path), timeout=400)
    checks = json.loads((tmp_path / "gpu_check.json").read_text())["checks"]
    ran = {c["check"]: c["ok"] for c in checks}
    assert ran["pinning"] and ran["warm start"] and ran["device-compare throughput"], out
    assert ran["classify-digits on device vs DataLoader"], out
    assert ran["memory caps"] is None  # skipped: no GPU
