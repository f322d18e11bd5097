"""A 2-GPU gang on a lent machine: an NCCL all-reduce under torchrun across both cards of one host.

Skipped, with the reason, on a machine with fewer than two GPUs.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.commands import command_stack, with_lab_env
from tests.support.stack import Stack
from worker.device import count_gpus

pytestmark = pytest.mark.gpu

NCCL = textwrap.dedent('''
    import os
    import sys
    import torch
    import torch.distributed as dist

    rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl")
    value = torch.tensor([float(rank + 1)], device="cuda")
    dist.all_reduce(value)
    uuid = torch.cuda.get_device_properties(rank).uuid
    # One write per line (print() under torchrun's -u writes text and newline apart; ranks share a pipe).
    sys.stdout.write(f"rank {rank}: all_reduce={value.item():g} devices={torch.cuda.device_count()} uuid={uuid}\\n")
    dist.destroy_process_group()
''')


@pytest.fixture(scope="module")
def gpu_gang_stack() -> Iterator[Stack]:
    gpus = count_gpus()
    if gpus < 2:
        pytest.skip(f"needs 2 CUDA GPUs on one host; this machine has {gpus}")
    for stack in command_stack("sqlite"):
        with_lab_env(stack)
        for device in ("cuda:0", "cuda:1"):
            stack.add_worker(device)
        yield stack


@pytest.mark.timeout(420)
def test_a_two_gpu_gang_all_reduces_over_nccl(gpu_gang_stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "nccl.py").write_text(NCCL)
    out = gpu_gang_stack.gpulab("submit", "--working-dir", str(tmp_path), "--no-wait", "--python-env", "lab",
                                "--device", "gpu", "--gpus", "2", "--", "python", "-m", "torch.distributed.run",
                                "--standalone", "--nproc-per-node", "2", "nccl.py",
                                env={"GPULAB_TOKEN": gpu_gang_stack.token})
    job_id = int(out.stdout.strip())
    done = gpu_gang_stack.wait_for(job_id, timeout=300)
    assert done["status"] == "succeeded", done
    lines = gpu_gang_stack.api("GET", f"/jobs/{job_id}/events", params={"type": "log", "limit": 500})["items"]
    ranks = {}
    for item in lines:
        if m := re.search(r"rank (\d): all_reduce=(\S+) devices=(\d) uuid=(\S+)", item.get("message") or ""):
            ranks[int(m[1])] = (float(m[2]), int(m[3]), m[4])
    assert sorted(ranks) == [0, 1], lines
    assert all(r[0] == 3.0 and r[1] == 2 for r in ranks.values()), ranks
    assert ranks[0][2] != ranks[1][2]  # two different cards
