"""Runs one job attempt inside a worker child: claim, run, record, finish.

Everything the job reports is fenced by its attempt, so a stale or redelivered message
claims nothing and writes nothing.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from jobs.artifacts import is_disk_full
from jobs.base import JobError
from jobs.registry import UnknownKind, get_kind
from service.db import Database
from service.live import Publisher
from service.models import DeviceKind, FailReason, JobStatus
from service.scheduling.starting import Dispatch, place_if_queue_short, send_dispatched
from service.settings import Settings
from service.store.devices import device_facts, record_device_facts
from service.store.jobs import Claim, cancel_requested, claim_job, finish_job
from worker.command import COMMAND_KIND, run_command
from worker.context import WorkerContext
from worker.device import DeviceInfo, child_runtime_facts
from worker.retry import until_written

log = logging.getLogger("gpulab.worker")

# Errors after which the CUDA context is unusable: the child must be replaced.
_CUDA_FAULT_MARKS = ("device-side assert", "CUDA error", "illegal memory access", "cudaErrorLaunchFailure")


@dataclass
class Outcome:
    status: JobStatus
    reason: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    poisoned: bool = False  # the process must not run another job


def jsonable(value: Any) -> Any:
    """A job's result as strict JSON: numpy/torch scalars become numbers, NaN becomes None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return jsonable(value.tolist())
    if hasattr(value, "item"):
        return jsonable(value.item())
    return str(value)


def _closing_line(outcome: Outcome, took_s: float) -> dict[str, Any]:
    """The runner's last log line: how the job ended, and after how long."""
    why = f" ({outcome.reason})" if outcome.reason and outcome.reason != outcome.status else ""
    return {"type": "log", "message": f"{outcome.status} after {took_s:.2f} s{why}"}


# What this process last committed of its device's facts: a job whose process learned nothing
# new does not read the device's row again.
_facts_recorded: dict[str, dict[str, Any]] = {}


def _stopped(end: Outcome) -> Outcome:
    """A success that a cancel overtook: the job ends cancelled, its result kept."""
    return Outcome(JobStatus.cancelled, FailReason.cancelled, result=end.result, error="stopped after a cancel")


def _is_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


def _is_cuda_fault(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return any(mark in text for mark in _CUDA_FAULT_MARKS)


class JobRunner:
    def __init__(self, *, settings: Settings, db: Database, device: DeviceInfo, worker_id: str,
                 celery: Celery | None = None, publisher: Publisher | None = None):
        self.settings = settings
        self.db = db
        self.device = device
        self.worker_id = worker_id
        self.celery = celery  # with it, a finish places and sends the next jobs itself
        self.publisher = publisher  # with it, a finish's live messages wait for that send

    def run(self, job_id: int, attempt: int) -> Outcome | None:
        """Run one attempt of a job; None when the claim is refused (stale message)."""
        def claim() -> Claim | None:
            with self.db.writing() as session:
                return claim_job(session=session, job_id=job_id, attempt=attempt,
                                 device_id=self.device.id, worker_id=self.worker_id, pid=os.getpid())

        job = until_written(f"job {job_id}'s claim", claim)
        if job is None:
            log.info("job %s attempt %s: claim refused (stale or duplicate message)", job_id, attempt)
            return None
        ctx = WorkerContext(db=self.db, job_id=job_id, attempt=attempt,
                            device=self.device.torch_device, seed=job.seed,
                            artifacts_root=self.settings.artifacts_root,
                            flush_s=self.settings.event_flush_s,
                            flush_lines=self.settings.event_flush_lines)
        self._prepare_device(job.gpu_memory_gb)
        runtime = self._runtime()
        started = time.monotonic()
        outcome = self._call(job.kind, job.params, ctx)
        peak = self._release_device()
        self._record_end(ctx, outcome, peak, runtime, took_s=time.monotonic() - started, started_at=job.started_at)
        return outcome

    def _record_end(self, ctx: WorkerContext, outcome: Outcome, peak: float | None,
                    runtime: dict[str, Any], *, took_s: float, started_at: datetime | None) -> None:
        """Write the outcome and the last log lines in one commit; it waits out a database outage.

        The child does not take another job until it is written, so a job is never left
        `running` with its process gone on to another one.
        """
        job_id, attempt = int(ctx.job_id), ctx.attempt
        artifacts = [(a.name, a.content_type, size) for a, size in
                     ctx.existing_artifacts(disk_full=outcome.reason == FailReason.disk_full)]
        facts = device_facts(runtime)
        placed: list[Dispatch] = []
        ended: list[Outcome] = []  # the outcome last written (a cancel seen at the end changes it)
        committed: list[Session] = []  # the finish that won, its live messages held

        def place_next(session: Session) -> bool:
            placed.clear()  # a retried finish places again
            return self.celery is not None and place_if_queue_short(session=session, settings=self.settings,
                                                                   into=placed)

        def finish(end: Outcome, files: list[tuple[str, str, int]], *, with_lines: bool) -> bool:
            if end.status == JobStatus.succeeded and ctx.stopped:
                end = _stopped(end)
            # A success is written only if nobody asked to cancel the job, in the outcome's own
            # UPDATE: no read of the job before it, and no cancel slips in between.
            unless_cancelled = end.status == JobStatus.succeeded
            with self.db.writing() as session:
                if self.publisher is not None:
                    self.publisher.hold(session)
                ended.append(end)
                buffered = ctx.buffered() if with_lines else []
                events = [*buffered, _closing_line(end, took_s)] if with_lines else []
                if _facts_recorded.get(self.device.id) != facts:
                    record_device_facts(session=session, device_id=self.device.id, facts=facts)
                won = finish_job(session=session, job_id=job_id, attempt=attempt, status=end.status,
                                 reason=end.reason, error=end.error, result=end.result,
                                 peak_memory_mb=peak, artifacts=files, then=place_next, events=events,
                                 runtime=runtime, started_at=started_at, unless_cancelled=unless_cancelled)
                # Fenced out by a cancel asked for while it ran? It ends cancelled (if it still can).
                cancel_seen = not won and unless_cancelled and cancel_requested(session=session, job_id=job_id)
            if cancel_seen:  # once the session is closed: SQLite's write lock is one at a time
                return finish(_stopped(end), files, with_lines=with_lines)
            if won:
                ctx.forget(len(buffered))
                _facts_recorded[self.device.id] = facts
                committed.append(session)
            return won

        try:
            won = until_written(f"job {job_id}'s outcome", lambda: finish(outcome, artifacts, with_lines=True))
        except SQLAlchemyError:
            # Not a passing fault: the outcome, or its last lines, can never be stored. Written
            # apart, lines that cannot be stored are dropped and the outcome goes on without them.
            log.warning("job %s: its outcome and last log lines could not be stored together", job_id)
            won = self._finish_apart(ctx, ended[-1] if ended else outcome, took_s, artifacts,
                                     lambda end, files: finish(end, files, with_lines=False))
        if not won:
            # Fenced out (released, or ended by the watch): the attempt's lines are still kept.
            ctx.log(_closing_line(ended[-1] if ended else outcome, took_s)["message"])
            until_written(f"job {job_id}'s last log lines", ctx.flush)
        if placed and self.celery is not None:
            send_dispatched(self.celery, self.db.writing, placed)
        if self.publisher is not None:
            # After the send: the next job's message goes first, one Redis round trip sooner.
            for session in committed:
                self.publisher.release(session)

    def _finish_apart(self, ctx: WorkerContext, outcome: Outcome, took_s: float,
                      artifacts: list[tuple[str, str, int]],
                      finish: Callable[[Outcome, list[tuple[str, str, int]]], bool]) -> bool:
        """The last log lines in a commit of their own, then the outcome (or, if it can never be
        stored, a failure that says so)."""
        job_id = int(ctx.job_id)
        ctx.log(_closing_line(outcome, took_s)["message"])
        until_written(f"job {job_id}'s last log lines", ctx.flush)
        try:
            return until_written(f"job {job_id}'s outcome", lambda: finish(outcome, artifacts))
        except SQLAlchemyError as exc:
            # Not a passing fault: this outcome can never be stored. The job still ends.
            log.exception("job %s: its outcome could not be stored", job_id)
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            unstorable = Outcome(JobStatus.failed, FailReason.user_error,
                                 error=f"gpulab could not store this job's outcome ({type(exc).__name__}: "
                                       f"{first}); its log holds what it reported")
            return until_written(f"job {job_id}'s outcome", lambda: finish(unstorable, []))

    def _call(self, kind_name: str, raw_params: dict[str, Any], ctx: WorkerContext) -> Outcome:
        try:
            kind = get_kind(kind_name)
            params = kind.validate(raw_params)
        except (UnknownKind, ValidationError) as exc:
            return Outcome(JobStatus.failed, FailReason.invalid_params, error=str(exc))
        try:
            if kind.name == COMMAND_KIND:  # a member's program: a subprocess, never in this process
                result = run_command(params, ctx, settings=self.settings, device=self.device)  # type: ignore[arg-type]
            else:
                result = kind.run(params, ctx)
            return Outcome(JobStatus.succeeded, result=jsonable(result or {}))
        except SoftTimeLimitExceeded:
            return Outcome(JobStatus.failed, FailReason.timeout, error="the job ran past its time limit")
        except JobError as exc:
            # A command's failure names its own reason (oom, env_build_failed, ...); one stopped by a
            # cancel before its program started (while its environment was built) is cancelled.
            reason = getattr(exc, "reason", FailReason.user_error)
            status = JobStatus.cancelled if reason == FailReason.cancelled else JobStatus.failed
            return Outcome(status, reason, error=str(exc))
        except Exception as exc:
            # The traceback is kept as text; the exception (and the tensors its frames hold)
            # is dropped when this block ends, before the cache is emptied.
            reason = FailReason.oom if _is_oom(exc) else FailReason.user_error
            error = "".join(traceback.format_exception(exc)).strip()
            if is_disk_full(exc):
                # One line a member can act on: the traceback is gpulab's own copying or saving.
                reason = FailReason.disk_full
                where = getattr(exc, "filename", None)
                error = (f"disk full: the job's folder has no space left{f' (writing {where})' if where else ''}; "
                         "its artifacts were not recorded (they may be cut short): write less, or ask an admin "
                         "to free space there")
            return Outcome(JobStatus.failed, reason, error=error, poisoned=_is_cuda_fault(exc))

    def _runtime(self) -> dict[str, Any]:
        """The versions and flags this job runs with: the worker's, plus what this child sees."""
        try:
            return {**self.device.runtime, **child_runtime_facts(self.device)}
        except Exception as exc:  # a broken CUDA context: the job itself will say more
            return {**self.device.runtime, "runtime_error": str(exc)}

    def _prepare_device(self, gpu_memory_gb: float | None) -> None:
        if self.device.kind != DeviceKind.cuda:
            return
        import torch

        # A cap, not a fence: it stops this process's allocator, not another process.
        fraction = 1.0
        if gpu_memory_gb and self.device.memory_total_mb:
            fraction = min(1.0, gpu_memory_gb * 1024 / self.device.memory_total_mb)
        torch.cuda.set_per_process_memory_fraction(fraction, 0)
        torch.cuda.reset_peak_memory_stats(0)

    def _release_device(self) -> float | None:
        if self.device.kind != DeviceKind.cuda:
            return None
        import torch

        try:
            peak = torch.cuda.max_memory_allocated(0) / 2**20
            gc.collect()
            torch.cuda.empty_cache()
        except RuntimeError:  # a faulted context: the child is recycled after this job
            return None
        return round(peak, 1)

