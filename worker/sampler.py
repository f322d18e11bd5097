"""Reading a device's utilisation, memory, temperature and power, in the worker parent.

GPUs are read through NVML (never CUDA: the parent must not create a context). The
processes on a GPU that are not this worker's children are counted as memory used outside
gpulab, which the dispatcher subtracts from the card's free room.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from service.models import DeviceKind
from worker.device import DeviceInfo, nvml_index

log = logging.getLogger("gpulab.worker")


def _meminfo_mb() -> tuple[float | None, float | None]:
    values: dict[str, float] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                values[key] = float(rest.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        return None, None
    total = values.get("MemTotal")
    available = values.get("MemAvailable")
    return (None if total is None or available is None else total - available), total


def sample_cpu() -> dict[str, Any]:
    """The machine's load (as % of its cores) and memory."""
    load = os.getloadavg()[0] / (os.cpu_count() or 1) * 100
    used, total = _meminfo_mb()
    return {"utilization_pct": round(min(load, 100.0), 1), "memory_used_mb": used, "memory_total_mb": total,
            "temperature_c": None, "power_w": None, "external_mb": None, "processes": None}


class GpuSampler:
    def __init__(self, info: DeviceInfo, visible: str, ours: Callable[[int], int | None]):
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index(info.index or 0, visible))
        self.ours = ours  # pid -> job id when the pid is one of this worker's children, else None

    def _maybe(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self.nvml.NVMLError:
            return None  # not every card reports every reading

    def __call__(self) -> dict[str, Any]:
        nvml, h = self.nvml, self.handle
        util = self._maybe(lambda: nvml.nvmlDeviceGetUtilizationRates(h).gpu)
        mem = nvml.nvmlDeviceGetMemoryInfo(h)
        temp = self._maybe(lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
        power = self._maybe(lambda: nvml.nvmlDeviceGetPowerUsage(h) / 1000)
        procs = []
        for p in self._maybe(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(h)) or []:
            used = (p.usedGpuMemory or 0) / 2**20
            job = self.ours(p.pid)
            procs.append({"pid": p.pid, "used_mb": round(used, 1), "gpulab": job is not None, "job_id": job})
        external = sum(p["used_mb"] for p in procs if not p["gpulab"])
        return {"utilization_pct": util, "memory_used_mb": mem.used / 2**20, "memory_total_mb": mem.total / 2**20,
                "temperature_c": temp, "power_w": power, "external_mb": round(external, 1), "processes": procs}


def make_sampler(info: DeviceInfo, visible: str, ours: Callable[[int], int | None]) -> Callable[[], dict[str, Any]]:
    """A function returning one reading of this worker's device."""
    if info.kind == DeviceKind.cuda:
        return GpuSampler(info, visible, ours)
    return sample_cpu


class SampleRecorder:
    """Records a reading every `sample_s` and folds old readings away every ten minutes."""

    PRUNE_EVERY_S = 600.0

    def __init__(self, *, db: Any, settings: Any, device_id: str, read: Callable[[], dict[str, Any]]):
        self.db = db
        self.settings = settings
        self.device_id = device_id
        self.read = read
        self._next_sample = 0.0
        self._next_prune = 0.0

    def __call__(self) -> None:
        # The heartbeat calls this after its own write: a reading that fails (NVML hiccup, a
        # full disk) must not make the worker look unhealthy and stop it taking jobs.
        try:
            self._record()
        except Exception as exc:
            log.warning("device sample failed: %s", exc)

    def _record(self) -> None:
        from service.store.samples import downsample_and_prune, record_sample

        now = time.monotonic()
        if now >= self._next_sample:
            self._next_sample = now + self.settings.sample_s
            sample = self.read()
            with self.db.writing() as session:
                record_sample(session=session, device_id=self.device_id, sample=sample)
        if now >= self._next_prune:
            self._next_prune = now + self.PRUNE_EVERY_S
            with self.db.writing() as session:
                downsample_and_prune(session=session, device_id=self.device_id,
                                     raw_keep_s=self.settings.samples_raw_keep_s,
                                     minute_keep_s=self.settings.samples_minute_keep_s)
