"""End every process a command job left, even those that left its process group.

torchrun starts each rank in a session of its own (`start_new_session=True`), so a signal to
the command's group reaches torchrun but not the ranks: a torchrun killed before it could
stop them leaves them running on the devices. Every process of a job carries the job's
GPULAB_JOB_ID, GPULAB_ATTEMPT and GPULAB_DEVICE_QUEUE in its environment (built by
`command_env`, inherited by torchrun's ranks), and those, not a bare pid, are what the sweep kills.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def job_processes(job_id: int, attempt: int, device_queue: str, *, proc: Path = Path("/proc")) -> list[int]:
    """Pids whose environment names this job and attempt, run from this device queue (those this
    process may read).

    Job ids are small numbers in every installation: another gpulab on this host (a second test
    stack, say) has its own job of this id and attempt, and its ranks are not ours to end. The
    queue name carries the installation id.
    """
    return _marked((f"GPULAB_JOB_ID={job_id}".encode(), f"GPULAB_ATTEMPT={attempt}".encode(),
                    f"GPULAB_DEVICE_QUEUE={device_queue}".encode()), proc)


def device_processes(device_queue: str, *, proc: Path = Path("/proc")) -> list[int]:
    """Pids of command jobs started by the worker of this device queue (any job, any attempt).

    The queue name carries the installation id: another gpulab on this host (a second test
    stack, say) may have a device of the same id, and its jobs are not ours to end.
    """
    return _marked((f"GPULAB_DEVICE_QUEUE={device_queue}".encode(),), proc)


def _marked(marks: tuple[bytes, ...], proc: Path) -> list[int]:
    me = os.getpid()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or another account's that we may not read
            continue
        if all(mark in env for mark in marks):
            found.append(int(entry.name))
    return found


def end_job_processes(job_id: int, attempt: int, device_queue: str) -> int:
    """SIGKILL whatever still runs for this job and attempt; returns how many were found."""
    return _kill(job_processes(job_id, attempt, device_queue))


def end_orphans_of_device(device_queue: str) -> int:
    """At a worker's start: kill what an earlier worker of this device left running (its ranks).

    A new incarnation runs nothing yet, so any command job process marked with its queue
    belongs to a worker that died without ending it (the reaper retries or fails that job as an
    old incarnation's); left alone it would hold the cards' memory.
    """
    return _kill(device_processes(device_queue))


def _kill(pids: list[int]) -> int:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
