"""A command job's preparation: its account, run folder, bundle, Python environment and
environment variables, ready before anything of the member's starts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jobs.base import JobError
from jobs.command import Params
from service.models import FailReason, Job, PythonEnv, User
from service.queues import device_queue
from service.settings import Settings
from service.store.allocations import job_devices
from service.store.bundles import bundle_of_job
from worker.command_account import Account, resolve_account, secure_state
from worker.command_env import build_env, default_prefix
from worker.command_files import RunFolder, fill_from_bundle, hand_over, make_run_folder, remove_run_folder
from worker.command_venv import BuildCancelled, EnvBuildFailed, venv_for
from worker.context import WorkerContext
from worker.device import DeviceInfo


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



def prepare_command(params: Params, ctx: WorkerContext, *, settings: Settings, device: DeviceInfo) -> Prepared:
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
            except (EnvBuildFailed, BuildCancelled) as exc:
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

