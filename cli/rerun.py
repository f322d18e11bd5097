"""`gpulab submit --like ID`: a new job that starts from an earlier one's settings.

A member's next run is usually the last one with one thing changed (an argument, a variable,
the folder after an edit). The earlier job gives the kind, the params (a command job's argv,
uploaded folder, --env, Python environment), the device request, GPUs, GPU memory, time limit,
priority and seed; what the command line gives replaces its part: a command after `--` the argv,
`--working-dir` the folder (packed and uploaded again), `--env NAME=VALUE` that variable,
`-p key=value` that param. The dashboard's "Clone and resubmit" does the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cli import bundles
from cli.client import Api, UsageError

COMMAND_KIND = "command"
HIDDEN = "***"  # how the API shows another member's --env values


def like_params(api: Api, job: dict[str, Any], *, command: list[str] | None, working_dir: Path | None,
                env: dict[str, str], python_env: str | None, requeue: bool, extra: dict[str, Any],
                say: Any = None) -> dict[str, Any]:
    """The params of a job like `job`, with what the command line gave in place of its parts."""
    params = dict(job["params"])
    if job["kind"] != COMMAND_KIND:
        if command is not None or working_dir is not None or env or python_env or requeue:
            raise UsageError(f"--like {job['id']}: job {job['id']} is a {job['kind']} job; a command after --, "
                             "--working-dir, --env, --python-env and --requeue are for command jobs")
        return {**params, **extra}
    if working_dir is None and params.get("bundle") and job["owner"] != api.get("/me")["name"]:
        # A bundle is its uploader's: the API would say "you have no bundle", as if it had expired.
        raise UsageError(f"--like {job['id']}: its uploaded folder is {job['owner']}'s; give --working-dir DIR "
                         "to upload your own")
    old_env = params.get("env") or {}
    if hidden := sorted(name for name, value in old_env.items() if value == HIDDEN and name not in env):
        raise UsageError(f"--like {job['id']}: the value of its --env {hidden[0]} is its owner's; "
                         f"give it again (--env {hidden[0]}=VALUE)")
    new = bundles.command_params(api, command if command is not None else params["argv"], working_dir=working_dir,
                                 env={**old_env, **env}, python_env=python_env or params.get("python_env"),
                                 requeue=requeue or bool(params.get("requeue")), say=say)
    if working_dir is None and params.get("bundle"):
        new["bundle"] = params["bundle"]  # the same uploaded folder: nothing is uploaded again
    if params.get("server_dir"):
        new["server_dir"] = params["server_dir"]
    return {**new, **extra}


def like_fields(job: dict[str, Any], *, device: str | None, gpus: int | None, gpu_memory_gb: float | None,
                priority: int | None, timeout: int | None, seed: int | None) -> dict[str, Any]:
    """The job's placement and run settings, each replaced by the one the command line gave."""
    def pick(given: Any, key: str) -> Any:
        return job[key] if given is None else given

    return {"device": pick(device, "device_request"), "gpus": pick(gpus, "gpus"),
            "gpu_memory_gb": pick(gpu_memory_gb, "gpu_memory_gb"), "priority": pick(priority, "priority"),
            "timeout_s": pick(timeout, "timeout_s"), "seed": pick(seed, "seed")}
