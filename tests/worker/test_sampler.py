"""The worker parent's device readings: the CPU here; a GPU through NVML on a lent GPU machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from worker.device import count_gpus, cpu_info, gpu_info
from worker.sampler import make_sampler, sample_cpu


def test_cpu_reading_is_load_and_memory() -> None:
    reading = sample_cpu()
    assert 0 <= reading["utilization_pct"] <= 100
    assert 0 < reading["memory_used_mb"] < reading["memory_total_mb"]
    assert reading["temperature_c"] is None and reading["external_mb"] is None
    assert make_sampler(cpu_info("testhost"), "", lambda pid: None) is sample_cpu


@pytest.mark.gpu
def test_gpu_reading_names_processes_outside_gpulab() -> None:
    if count_gpus() == 0:
        pytest.skip("needs a CUDA GPU (run on a lent GPU machine)")
    info = gpu_info("testhost", 0)
    # A process that is not the worker's child holds memory on the card: it is external.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import torch, sys; x = torch.ones(256 * 2**20, device='cuda'); "
         "print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": info.uuid or "0"})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        read = make_sampler(info, "", lambda pid: None)
        reading = read()
        assert 0 <= reading["utilization_pct"] <= 100
        assert reading["memory_total_mb"] == pytest.approx(info.memory_total_mb, abs=1)
        assert reading["temperature_c"] > 0 and reading["power_w"] > 0
        mine = [p for p in reading["processes"] if p["pid"] == holder.pid]
        assert mine and not mine[0]["gpulab"] and mine[0]["used_mb"] >= 1024
        assert reading["external_mb"] >= 1024
        # The same process counted as the worker's child is gpulab's, and not external.
        ours = make_sampler(info, "", lambda pid: 7 if pid == holder.pid else None)()
        assert [p["job_id"] for p in ours["processes"] if p["pid"] == holder.pid] == [7]
        assert ours["external_mb"] <= reading["external_mb"] - 1024
    finally:
        holder.kill()
        holder.wait()
