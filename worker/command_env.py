"""The environment a command starts with: built from nothing, never copied from the worker's.

The worker's own environment holds the database URL, the Redis URL and perhaps a token; a
command sees none of it. It gets the chosen Python environment's PATH, HOME, LANG, the job's
device (CUDA_VISIBLE_DEVICES by UUID), a free MASTER_PORT for torch.distributed, thread
counts fitted to the device, the GPULAB_* facts about its job, and the member's own `env`.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from service.models import DeviceKind
from service.settings import Settings
from worker.command_account import Account
from worker.command_files import RunFolder
from worker.device import DeviceInfo

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def free_port() -> int:
    """A TCP port free on this host now (for MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_prefix() -> Path:
    """The worker's own Python environment (its venv, or the system prefix)."""
    return Path(sys.prefix)


def threads_for(settings: Settings, device: DeviceInfo) -> int:
    """OpenMP/MKL threads: the worker's setting, else the CPUs it may use (a GPU job needs few)."""
    if settings.torch_threads:
        return settings.torch_threads
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus if device.kind == "cpu" else min(cpus, 4))


def build_env(*, settings: Settings, device: DeviceInfo, account: Account, folder: RunFolder, lib: Path,
              prefix: Path, job_id: int, attempt: int, seed: int, member_env: dict[str, str],
              gang_uuids: Sequence[str] = (), gang_size: int = 1, queue: str = "") -> dict[str, str]:
    """The command's whole environment. A gang's leader gets every GPU of the gang (UUIDs in bus order)."""
    home = account.home if account.home and os.path.isdir(account.home) else str(folder.home)
    threads = str(threads_for(settings, device))
    env = {
        "PATH": f"{prefix / 'bin'}:{SYSTEM_PATH}",
        "HOME": home,
        "USER": account.name,
        "LOGNAME": account.name,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": str(folder.tmp),
        "PYTHONUNBUFFERED": "1",  # output arrives as it is printed, so progress is live
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        # The worker is pinned to one card, but its subprocess may see several: a gang's N cards.
        "CUDA_VISIBLE_DEVICES": (",".join(gang_uuids) if gang_uuids else device.uuid or "")
        if device.kind == DeviceKind.cuda else "",
        "GPULAB_GPUS": str(gang_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "GPULAB_JOB_ID": str(job_id),
        "GPULAB_ATTEMPT": str(attempt),
        "GPULAB_SEED": str(seed),
        "GPULAB_DEVICE": "cuda:0" if device.kind == DeviceKind.cuda else "cpu",
        "GPULAB_OUTPUT_DIR": str(folder.output),
    }
    if queue:
        # Marks every process of the job (torchrun's ranks too) for the sweeps in command_sweep.
        env["GPULAB_DEVICE_QUEUE"] = queue
    if os.environ.get("VIRTUAL_ENV") or (prefix / "pyvenv.cfg").exists():
        env["VIRTUAL_ENV"] = str(prefix)
    extra_path = member_env.get("PYTHONPATH")
    env.update(member_env)
    # gpulab_report is importable in every environment; a member's PYTHONPATH comes first.
    env["PYTHONPATH"] = f"{extra_path}:{lib}" if extra_path else str(lib)
    return env
