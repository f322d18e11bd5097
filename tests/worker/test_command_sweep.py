"""The sweep ends a job's processes that left its process group (torchrun's ranks), and only those."""

from __future__ import annotations

import os
import subprocess
import sys

from worker.command_sweep import device_processes, end_job_processes, end_orphans_of_device, job_processes


def sleeper(job_id: int, attempt: int, queue: str = "dev.inst1.h/cpu") -> subprocess.Popen[bytes]:
    env = {**os.environ, "GPULAB_JOB_ID": str(job_id), "GPULAB_ATTEMPT": str(attempt), "GPULAB_DEVICE_QUEUE": queue}
    # A session of its own, as torchrun starts each rank: a signal to the job's group misses it.
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env, start_new_session=True)


def test_the_sweep_kills_this_job_and_attempt_only() -> None:
    # Another installation on the host (a second stack) has its own job 9101, attempt 2.
    ours, other_attempt, other_job = sleeper(9101, 2), sleeper(9101, 1), sleeper(9102, 2)
    other_installation = sleeper(9101, 2, "dev.inst2.h/cpu")
    try:
        assert job_processes(9101, 2, "dev.inst1.h/cpu") == [ours.pid]
        assert end_job_processes(9101, 2, "dev.inst1.h/cpu") == 1
        assert ours.wait(timeout=10) == -9
        assert other_attempt.poll() is None and other_job.poll() is None and other_installation.poll() is None
        assert job_processes(9101, 2, "dev.inst1.h/cpu") == []
    finally:
        for p in (ours, other_attempt, other_job, other_installation):
            p.kill()
            p.wait()


def test_a_new_worker_ends_what_its_device_left_and_nothing_of_another_installation() -> None:
    env = {**os.environ, "GPULAB_JOB_ID": "1", "GPULAB_ATTEMPT": "1"}
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            env={**env, "GPULAB_DEVICE_QUEUE": "dev.inst1.h/cuda:0"}, start_new_session=True)
    theirs = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              env={**env, "GPULAB_DEVICE_QUEUE": "dev.inst2.h/cuda:0"}, start_new_session=True)
    try:
        assert device_processes("dev.inst1.h/cuda:0") == [ours.pid]
        assert end_orphans_of_device("dev.inst1.h/cuda:0") == 1
        assert ours.wait(timeout=10) == -9 and theirs.poll() is None
    finally:
        for p in (ours, theirs):
            p.kill()
            p.wait()
