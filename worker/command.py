"""Runs a `command` job inside a worker child: the member's program as a subprocess, never in-process.

prepare (account, run folder, bundle, environment) → start (own session and process group, the
member's uid/gid/groups, umask 077, an environment built from nothing) → follow (output into
the log, reports and progress bars into the job) → stop (cancel or time limit: SIGINT, then
SIGTERM, then SIGKILL to the whole group) → harvest (outputs become artifacts). How it ended
is told to worker/runner.py, which decides the reason code, as for every kind.
"""

from __future__ import annotations

import ctypes
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from jobs.base import JobError
from jobs.command import Params
from service.models import FailReason, Job, PythonEnv, User
from service.queues import device_queue
from service.settings import Settings
from service.store.allocations import job_devices
from service.store.bundles import bundle_of_job
from worker.command_account import Account, first_closed_folder, resolve_account, secure_state
from worker.command_env import build_env, default_prefix
from worker.command_files import (
    RunFolder,
    collect_outputs,
    fill_from_bundle,
    hand_over,
    make_run_folder,
    remove_run_folder,
    snapshot,
)
from worker.command_output import OutputReader
from worker.command_sweep import end_job_processes
from worker.command_venv import EnvBuildFailed, venv_for
from worker.context import WorkerContext
from worker.device import DeviceInfo

COMMAND_KIND = "command"
READ_CHUNK = 65536
DRAIN_S = 2.0  # output still arriving from a finished command's leftovers


class CommandFailed(JobError):
    """A command job's failure, with the reason code worker/runner.py records."""

    def __init__(self, message: str, reason: str = FailReason.user_error):
        super().__init__(message)
        self.reason = reason


@dataclass
class Prepared:
    account: Account
    folder: RunFolder
    env: dict[str, str]
    facts: dict[str, Any]


class Stopper:
    """SIGINT, then SIGTERM, then SIGKILL to a process group, spread over the cancel grace.

    The worker parent kills the whole child once the grace has passed, so the three steps end
    before it: SIGINT at once (a training loop's KeyboardInterrupt handler saves its
    checkpoint), SIGTERM at half the grace, SIGKILL at 80 %.
    """

    def __init__(self, pgid: int, grace_s: float):
        self.pgid = pgid
        self.steps = [(0.0, signal.SIGINT), (max(0.5, 0.5 * grace_s), signal.SIGTERM),
                      (max(1.0, 0.8 * grace_s), signal.SIGKILL)]
        self.began: float | None = None
        self.why = ""

    def begin(self, why: str) -> None:
        if self.began is None:
            self.began, self.why = time.monotonic(), why
            self.tick()

    def tick(self) -> None:
        if self.began is None:
            return
        while self.steps and time.monotonic() - self.began >= self.steps[0][0]:
            _, sig = self.steps.pop(0)
            signal_group(self.pgid, sig)


def signal_group(pgid: int, sig: int) -> None:
    """Signal every process of the group (it may have ended already)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return


def run_command(params: Params, ctx: WorkerContext, *, settings: Settings, device: DeviceInfo) -> dict[str, Any]:
    """Run one command job to its end; returns its result or raises (CommandFailed, the time limit)."""
    prepared = _prepare(params, ctx, settings=settings, device=device)
    try:
        return _run(params, ctx, prepared, settings)
    finally:
        remove_run_folder(prepared.folder.root)


def _prepare(params: Params, ctx: WorkerContext, *, settings: Settings, device: DeviceInfo) -> Prepared:
    job_id = int(ctx.job_id)
    with ctx.db.reading() as session:
        job = session.get(Job, job_id)
        assert job is not None  # claimed a moment ago
        owner = session.get(User, job.owner_id)
        assert owner is not None
        bundle = bundle_of_job(session=session, sha256=params.bundle, owner_id=job.owner_id) if params.bundle else None
        env_row = session.get(PythonEnv, params.python_env) if params.python_env else None
        gang = job_devices(session=session, job_id=job_id) if job.gpus > 1 else []
        gang_uuids = [d.uuid for d in gang if d.uuid]
        gang_size = job.gpus
        facts: dict[str, Any] = {"bundle": None if bundle is None else {
            "sha256": bundle.sha256, "size_bytes": bundle.size_bytes, "files": bundle.files}}
    account = resolve_account(settings, owner.unix_user, member_id=owner.id, member=owner.name)
    prefix = _python_prefix(params, env_row)
    lib = secure_state(settings)
    folder = make_run_folder(settings, job_id, ctx.attempt, account)
    if params.server_dir:
        # In place, in an admin-allowed server folder: nothing is unpacked or handed over there.
        folder = replace(folder, work=Path(params.server_dir), scan_work=False)
        if not folder.work.is_dir():
            remove_run_folder(folder.root)
            raise CommandFailed(f"params.server_dir: {params.server_dir} is not a folder on {settings.host}",
                                FailReason.invalid_params)
    try:
        if params.bundle:
            try:
                fill_from_bundle(settings, folder, params.bundle)
            except (OSError, JobError) as exc:
                raise CommandFailed(f"params.bundle: {exc}", FailReason.invalid_params) from None
        hand_over(folder, account)

        def env_on(prefix: Path) -> dict[str, str]:
            return build_env(settings=settings, device=device, account=account, folder=folder, lib=lib,
                             prefix=prefix, job_id=job_id, attempt=ctx.attempt, seed=ctx.seed, member_env=params.env,
                             gang_uuids=gang_uuids, gang_size=gang_size, queue=device_queue(device.id))

        env = env_on(prefix)
        requirements = folder.work / "requirements.txt"
        if requirements.is_file() and not requirements.is_symlink():
            try:
                prefix = venv_for(settings=settings, account=account, prefix=prefix, requirements=requirements,
                                  env=env, ctx=ctx)
            except EnvBuildFailed as exc:
                raise CommandFailed(str(exc), exc.reason) from None
            env = env_on(prefix)
    except BaseException:
        remove_run_folder(folder.root)
        raise
    facts.update(unix_user=account.name, python_env=params.python_env or "default", python_prefix=str(prefix))
    return Prepared(account=account, folder=folder, env=env, facts=facts)


def _python_prefix(params: Params, env_row: PythonEnv | None) -> Path:
    if params.python_env is None:
        return default_prefix()
    if env_row is None:
        raise CommandFailed(f"params.python_env: no Python environment is called {params.python_env!r} any more",
                            FailReason.invalid_params)
    prefix = Path(env_row.path)
    if not (prefix / "bin").is_dir():
        raise CommandFailed(f"the Python environment {params.python_env!r} ({prefix}) has no bin/ folder on this "
                            "worker; an admin fixes it with gpulab envs add", FailReason.invalid_params)
    return prefix


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the command's process, after the switch of user: SIGKILL it if the worker's child dies.

    A worker killed outright (the OOM killer, SIGKILL) cannot stop the group itself; the kernel
    then ends the command at least. (Set after the user switch, which would clear it.)
    """
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _not_runnable(program: str, prepared: Prepared, exc: OSError) -> str:
    """Why the account may not run the program, and what to do: usually an interpreter under /root."""
    found = shutil.which(program, path=prepared.env["PATH"])
    closed = first_closed_folder(prepared.account, Path(found)) if found else None
    if found is None or closed is None:
        return f"cannot start {program!r}: {exc.strerror} (PATH={prepared.env['PATH']})"
    real = Path(found).resolve()
    where = found if real == Path(found) else f"{found} (→ {real})"
    return (f"cannot start {program!r} as {prepared.account.name}: {where} lies under {closed}, which that account "
            "cannot enter; an admin registers a Python environment it can run (gpulab envs add NAME /opt/...) "
            "and the job names it with --python-env NAME")


def _start(params: Params, prepared: Prepared) -> subprocess.Popen[bytes]:
    account = prepared.account
    switch: dict[str, Any] = {}
    if account.switch:
        switch = {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}
    # The worker's child ignores SIGINT, and an ignored signal stays ignored across exec: the
    # command would never see the cancel's SIGINT (Python installs no KeyboardInterrupt handler
    # then). A handled signal is reset to the default at exec, so handle it while forking.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    try:
        return subprocess.Popen(params.argv, cwd=prepared.folder.work, env=prepared.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True, umask=0o077, preexec_fn=_die_with_parent, **switch)
    except PermissionError as exc:
        raise CommandFailed(_not_runnable(params.argv[0], prepared, exc)) from None
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise CommandFailed(f"cannot start {params.argv[0]!r}: {exc.strerror} (PATH={prepared.env['PATH']})") from None
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _pump(fd: int, chunks: queue.Queue[bytes | None]) -> None:
    while True:
        try:
            data = os.read(fd, READ_CHUNK)
        except OSError:
            data = b""
        if not data:
            chunks.put(None)
            return
        chunks.put(data)


def _run(params: Params, ctx: WorkerContext, prepared: Prepared, settings: Settings) -> dict[str, Any]:
    before = snapshot(prepared.folder.work) if prepared.folder.scan_work else {}
    ctx.log(f"$ {shlex.join(params.argv)}   (as {prepared.account.describe()}, in {prepared.folder.work})")
    started = time.monotonic()
    proc = _start(params, prepared)
    assert proc.stdout is not None
    chunks: queue.Queue[bytes | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout.fileno(), chunks), daemon=True).start()
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
            time.sleep(0.05)  # the output ended; the process is exiting
        if proc.poll() is not None:
            # The command exited; children holding the pipe open get a moment, then the group goes.
            ended_at = ended_at or time.monotonic()
            if time.monotonic() - ended_at > DRAIN_S:
                signal_group(proc.pid, signal.SIGKILL)
                return
        if stopper.began is None and ctx.should_stop():
            ctx.log("stopping: SIGINT now, then SIGTERM and SIGKILL to the process group")
            stopper.begin("cancel")
        stopper.tick()


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
