"""Job kinds for gpulab's service tests: no torch, so the service's tests stay fast.

They also show how a lab ships its own kinds: a `JobKind` per entry point in the
`gpulab.jobs` group of its package.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.base import JobContext, JobError, JobKind


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field("hello", max_length=1000)
    lines: int = Field(3, ge=0, le=100_000)
    steps: int = Field(3, ge=0, le=10_000)
    artifact: bool = False
    hostile_result: bool = False  # a result whose strings no database stores as they are


def run_echo(params: EchoParams, ctx: JobContext) -> dict[str, Any]:
    for i in range(params.lines):
        ctx.log(f"{params.message} {i}")
    for step in range(1, params.steps + 1):
        ctx.metric("loss", 1.0 / step, step)
        ctx.progress(step, params.steps)
    if params.artifact:
        ctx.artifact_path("echo.txt", "text/plain").write_text(params.message)
    result: dict[str, Any] = {"message": params.message, "pid": os.getpid(), "device": ctx.device,
                              "seed": ctx.seed}
    if params.hostile_result:
        result["text\x00"] = ["a\x00b", "\udfff", float("nan")]
    return result


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(1.0, ge=0, le=3600)
    ignore_stop: bool = False  # a job that never checks should_stop() (for the hard kill)
    ignore_time_limit: bool = False  # a job that swallows the soft time limit (for the hard one)


def run_sleep(params: SleepParams, ctx: JobContext) -> dict[str, Any]:
    deadline = time.monotonic() + params.seconds
    steps = 0
    while time.monotonic() < deadline:
        if not params.ignore_stop and ctx.should_stop():
            return {"stopped_early": True, "steps": steps, "pid": os.getpid()}
        try:
            time.sleep(0.05)
        except BaseException:
            if not params.ignore_time_limit:
                raise
        steps += 1
    ctx.log(f"slept {params.seconds} s")
    return {"stopped_early": False, "steps": steps, "pid": os.getpid()}


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["job-error", "exception", "cuda-fault", "crash", "hostile-text"] = "job-error"
    message: str = "it went wrong"


def run_fail(params: FailParams, ctx: JobContext) -> dict[str, Any]:
    ctx.log(f"about to fail: {params.mode}")
    if params.mode == "job-error":
        raise JobError(params.message)
    if params.mode == "cuda-fault":
        raise RuntimeError("CUDA error: device-side assert triggered")
    if params.mode == "crash":
        os._exit(9)  # the process dies as if the OOM killer took it
    if params.mode == "hostile-text":
        # What no database stores as it is: NUL (PostgreSQL) and a lone surrogate (UTF-8).
        ctx.log("nul\x00here and a lone \ud800 surrogate")
        ctx.metric("loss\x00\udc80", 1.0, 1)
        raise ValueError(f"{params.message}\x00 \ud800")
    raise ValueError(params.message)


class FilesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    link_to: str | None = Field(None, max_length=4096)  # leave leak.txt as a symlink to this path
    write_mb: float = Field(0, ge=0, le=1024)  # then write big.bin of this size (a disk can fill)


def run_files(params: FilesParams, ctx: JobContext) -> dict[str, Any]:
    ctx.artifact_path("note.txt", "text/plain").write_text("a regular artifact")
    if params.link_to:
        os.symlink(params.link_to, ctx.artifact_path("leak.txt", "text/plain"))
    if params.write_mb:
        with open(ctx.artifact_path("big.bin"), "wb") as f:
            for _ in range(int(params.write_mb * 16)):
                f.write(b"x" * (1 << 16))
    return {"written": True}


ECHO = JobKind(name="test-echo", params=EchoParams, run=run_echo, summary="logs, metrics, progress (tests)")
SLEEP = JobKind(name="test-sleep", params=SleepParams, run=run_sleep, summary="sleeps, honouring cancel (tests)")
FAIL = JobKind(name="test-fail", params=FailParams, run=run_fail, summary="fails in a chosen way (tests)")
FILES = JobKind(name="test-files", params=FilesParams, run=run_files,
                summary="leaves artifacts: a regular one, a symlink, a large one (tests)")


class AllocParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mb: int = Field(64, ge=0, le=1_000_000, description="memory to allocate on the job's device")
    hold_s: float = Field(0.0, ge=0, le=3600, description="how long to hold it (cancel ends it sooner)")


def run_alloc(params: AllocParams, ctx: JobContext) -> dict[str, Any]:
    # torch is imported here, as job kinds do: the service lists kinds without it.
    import torch

    device = torch.device(ctx.device)
    block = torch.empty(params.mb * 2**20, dtype=torch.uint8, device=device)
    block.fill_(1)
    deadline = time.monotonic() + params.hold_s
    while time.monotonic() < deadline and not ctx.should_stop():
        time.sleep(0.05)
    info: dict[str, Any] = {"pid": os.getpid(), "device": ctx.device, "allocated_mb": params.mb,
                            "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            "gc_frozen": gc.get_freeze_count()}  # the worker's start-up, frozen
    if device.type == "cuda":
        info.update(device_count=torch.cuda.device_count(), name=torch.cuda.get_device_name(0),
                    max_allocated_mb=torch.cuda.max_memory_allocated(0) / 2**20)
    del block
    return info


ALLOC = JobKind(name="test-alloc", params=AllocParams, run=run_alloc,
                summary="allocates memory on its device and holds it (GPU checks)")
