"""One GPU shared by capped jobs: a real worker with `--device cuda:0 --slots 2` (run on a lent GPU machine).

Two jobs that declared memory run on the card at once; an allocation over a job's cap fails
that job alone (oom) while its neighbour finishes; a cancelled job's memory comes back, both on
the card (NVML) and in the dispatcher's room.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import next_redis_url
from tests.support.stack import Stack
from worker.device import count_gpus

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if count_gpus() == 0:
        pytest.skip("needs a CUDA GPU (run on a lent GPU machine)")
    tmp: Path = tmp_path_factory.mktemp("gpu-stack")
    stack = Stack(database_url=f"sqlite:///{tmp / 'gpulab.sqlite3'}", redis_url=next_redis_url(), state_dir=tmp)
    try:
        stack.start(workers=())
        stack.add_worker("cuda:0", slots=2)
        yield stack
    finally:
        stack.stop()


def alloc(stack: Stack, mb: int, gb: float, hold_s: float = 0.0) -> int:
    return stack.submit("test-alloc", {"mb": mb, "hold_s": hold_s}, device="cuda:0", gpu_memory_gb=gb)["id"]


def process_mb(pid: int) -> float:
    """GPU memory NVML sees the process using (0 when it holds none)."""
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
        if proc.pid == pid:
            return (proc.usedGpuMemory or 0) / 2**20
    return 0.0


def test_two_capped_jobs_share_one_gpu_at_once(gpu_lab: Stack) -> None:
    first, second = alloc(gpu_lab, 1024, 4, hold_s=4), alloc(gpu_lab, 1024, 4, hold_s=4)
    gpu_lab.wait_for(first, ("running",), timeout=60)
    gpu_lab.wait_for(second, ("running",), timeout=60)
    a, b = gpu_lab.wait_for(first, timeout=60), gpu_lab.wait_for(second, timeout=60)
    assert a["status"] == b["status"] == "succeeded", (a["error"], b["error"])
    assert a["device_id"] == b["device_id"] == "testhost/cuda:0"
    assert a["result"]["pid"] != b["result"]["pid"]
    # Their runs overlap in time: the card ran both.
    start = max(datetime.fromisoformat(a["started_at"]), datetime.fromisoformat(b["started_at"]))
    end = min(datetime.fromisoformat(a["finished_at"]), datetime.fromisoformat(b["finished_at"]))
    assert start < end
    assert a["result"]["max_allocated_mb"] >= 1024 and a["peak_memory_mb"] >= 1024


def test_an_allocation_over_the_cap_fails_only_that_job(gpu_lab: Stack) -> None:
    neighbour = alloc(gpu_lab, 512, 2, hold_s=3)
    greedy = alloc(gpu_lab, 6 * 1024, 2)
    bad = gpu_lab.wait_for(greedy, timeout=60)
    assert (bad["status"], bad["reason"]) == ("failed", "oom"), bad["error"]
    good = gpu_lab.wait_for(neighbour, timeout=60)
    assert good["status"] == "succeeded", good["error"]
    # The child that hit its cap is healthy: the next job runs.
    assert gpu_lab.wait_for(alloc(gpu_lab, 256, 1), timeout=60)["status"] == "succeeded"


def test_a_cancelled_jobs_memory_comes_back(gpu_lab: Stack) -> None:
    total_gb = gpu_lab.api("GET", "/devices/testhost/cuda:0/info")["memory_total_mb"] / 1024
    holder = alloc(gpu_lab, 4 * 1024, 6, hold_s=120)
    assert gpu_lab.wait_for(holder, ("running",), timeout=60)["device_id"] == "testhost/cuda:0"
    child = running_pid(gpu_lab, holder)
    gpu_lab.wait(lambda: process_mb(child) >= 4 * 1024, 30, "the job's 4 GiB to show in NVML")
    # While it holds its declared 6 GiB, a job declaring the rest of the card waits for memory.
    big = alloc(gpu_lab, 256, total_gb - 6)
    gpu_lab.wait(lambda: any(e["job_id"] == big and e["reason"] == "no_memory"
                             for e in gpu_lab.api("GET", "/queue")["items"]), 15, "the big job to wait for memory")
    gpu_lab.api("POST", f"/jobs/{holder}/cancel")
    assert gpu_lab.wait_for(holder, timeout=30)["status"] == "cancelled"
    # The child keeps its CUDA context (warm), but not the job's memory.
    assert process_mb(child) < 2 * 1024
    assert gpu_lab.wait_for(big, timeout=60)["status"] == "succeeded"


def running_pid(stack: Stack, job_id: int) -> int:
    """The pid of the worker child running a job (recorded at its claim)."""
    events = stack.api("GET", f"/jobs/{job_id}/events", params={"type": "status"})["items"]
    running = next(e for e in events if e["data"]["status"] == "running")
    return int(running["message"].rsplit("pid ", 1)[1].rstrip(")"))
