"""Runs a `command` job inside a worker child: the member's program as a subprocess, never in-process.

prepare (account, run folder, bundle, environment) → start (own session and process group, the
member's uid/gid/groups, umask 077, an environment built from nothing) → follow (output into
the log, reports and progress bars into the job) → stop (cancel or time limit: SIGINT, then
SIGTERM, then SIGKILL to the whole group) → harvest (outputs become artifacts). How it ended
is told to worker/runner.py, which decides the reason code, as for every kind.
"""

from __future__ import annotations

import contextlib
import queue
import shlex
import signal
import subprocess
import threading
import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from jobs.command import Params
from service.models import FailReason
from service.settings import Settings
from worker.command_files import collect_outputs, remove_run_folder, snapshot
from worker.command_output import OutputReader
from worker.command_prepare import CommandFailed, Prepared, prepare_command
from worker.command_process import Stopper, pump, signal_group, start_command
from worker.command_sweep import end_job_processes
from worker.context import WorkerContext
from worker.device import DeviceInfo

__all__ = ["COMMAND_KIND", "CommandFailed", "Stopper", "run_command"]

COMMAND_KIND = "command"
DRAIN_S = 2.0  # output still arriving from a finished command's leftovers
# Output read ahead of the log, in chunks of READ_CHUNK: a command that prints faster than its
# lines are stored waits on its pipe, instead of the worker holding all of it in memory (a
# `yes` grew the child by the whole flood, and what was queued when it exited was dropped).
READ_AHEAD_CHUNKS = 16
DRAIN_LEFT_S = 60.0  # the read-ahead and the pipe's buffer, fed once the command's group is gone


def run_command(params: Params, ctx: WorkerContext, *, settings: Settings, device: DeviceInfo) -> dict[str, Any]:
    """Run one command job to its end; returns its result or raises (CommandFailed, the time limit)."""
    prepared = prepare_command(params, ctx, settings=settings, device=device)
    try:
        return _run(params, ctx, prepared, settings)
    finally:
        remove_run_folder(prepared.folder.root)



def _run(params: Params, ctx: WorkerContext, prepared: Prepared, settings: Settings) -> dict[str, Any]:
    before = snapshot(prepared.folder.work) if prepared.folder.scan_work else {}
    ctx.log(f"$ {shlex.join(params.argv)}   (as {prepared.account.describe()}, in {prepared.folder.work})")
    started = time.monotonic()
    proc = start_command(params, prepared)
    assert proc.stdout is not None
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=READ_AHEAD_CHUNKS)
    threading.Thread(target=pump, args=(proc.stdout.fileno(), chunks), daemon=True).start()
    reader = OutputReader(ctx)
    stopper = Stopper(proc.pid, settings.cancel_grace_s)
    timed_out = False
    try:
        while True:
            try:
                _follow(proc, chunks, reader, stopper, ctx)
                break
            except SoftTimeLimitExceeded:
                # The time limit is raised into this thread: stop the group, keep following it.
                timed_out = True
                stopper.begin("time limit")
    finally:
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGKILL)
        code = proc.wait()
        signal_group(proc.pid, signal.SIGKILL)  # what the command left running in its group
        # ...and outside it: torchrun's ranks run in sessions of their own.
        if (left := end_job_processes(int(ctx.job_id), ctx.attempt, prepared.env["GPULAB_DEVICE_QUEUE"])):
            ctx.log(f"ended {left} process(es) the command left outside its process group")
        proc.stdout.close()
        with contextlib.suppress(queue.Empty):  # a pump blocked on a full queue may end
            while True:
                chunks.get_nowait()
    reader.close()
    seconds = round(time.monotonic() - started, 3)
    harvest = collect_outputs(prepared.folder, before, ctx, limit_bytes=settings.max_output_mb * 2**20,
                              requested=reader.artifacts)
    for skipped in harvest.skipped:
        ctx.log(f"output not kept: {skipped}")
    facts = {**prepared.facts, "exit_code": code, "seconds": seconds, "outputs": [n for n, _ in harvest.kept]}
    return _ending(code, timed_out, stopper, reader, facts)


def _follow(proc: subprocess.Popen[bytes], chunks: queue.Queue[bytes | None], reader: OutputReader,
            stopper: Stopper, ctx: WorkerContext) -> None:
    """Feed output until it ends and the process has exited; start the stop when asked."""
    ended_at: float | None = None
    eof = False
    while True:
        try:
            data = chunks.get(timeout=0.2) if not eof else b""
        except queue.Empty:
            data = b""
        if data is None:
            eof = True
        elif data:
            reader.feed(data)
        if eof and proc.poll() is not None:
            return
        if eof:
            # The output ended; the process is exiting. Waited on, not slept on: the job's end is
            # recorded as soon as it has exited, not up to a poll period later.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)
        if proc.poll() is not None:
            # The command exited; children holding the pipe open get a moment, then the group goes.
            ended_at = ended_at or time.monotonic()
            if time.monotonic() - ended_at > DRAIN_S:
                signal_group(proc.pid, signal.SIGKILL)
                _drain(chunks, reader)
                return
        if stopper.began is None and ctx.should_stop():
            ctx.log("stopping: SIGINT now, then SIGTERM and SIGKILL to the process group")
            stopper.begin("cancel")
        stopper.tick()


def _drain(chunks: queue.Queue[bytes | None], reader: OutputReader) -> None:
    """Feed what is left once the group is gone: the read-ahead and the pipe's buffer, so every
    line a command printed is kept. A leftover outside the group that holds the pipe open is not
    waited on for long (the sweep after this ends it)."""
    deadline = time.monotonic() + DRAIN_LEFT_S
    while time.monotonic() < deadline:
        try:
            data = chunks.get(timeout=DRAIN_S)
        except queue.Empty:
            return
        if data is None:
            return
        reader.feed(data)


def _ending(code: int, timed_out: bool, stopper: Stopper, reader: OutputReader,
            facts: dict[str, Any]) -> dict[str, Any]:
    result = {**reader.result, **facts}
    if timed_out:
        raise SoftTimeLimitExceeded(f"the command ran past its time limit and was stopped (exit code {code})")
    if stopper.began is not None:
        return {**result, "stopped_early": True}
    if code == 0:
        return result
    how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    last = "\n".join(reader.tail)
    if reader.oom:
        raise CommandFailed(f"the command ran out of GPU memory (CUDA out of memory) and {how}; last output:\n{last}",
                            FailReason.oom)
    raise CommandFailed(f"the command {how}; last output:\n{last}")
