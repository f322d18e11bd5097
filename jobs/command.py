"""`command`: a member's own program (any argv) run on the job's device, as the member's Unix user.

The code arrives as a bundle (a packed working directory, `POST /bundles`); the worker unpacks
it into the job's own folder, which is the command's working directory, starts the argv without
a shell in its own process group, and collects the files it writes as artifacts. This module
holds what the API validates; worker/command.py runs it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from jobs.base import JobContext, JobError, JobKind

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
ENV_NAME_PREFIX_REFUSED = ("GPULAB_", "LD_", "DYLD_")
# Names that would change how the loader, the interpreter or the device pinning behaves, or
# that gpulab sets itself: a member's env never overrides them.
ENV_NAMES_REFUSED = frozenset({
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
    "PYTHONHOME", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONEXECUTABLE", "GCONV_PATH", "HOSTALIASES",
    "LOCALDOMAIN", "RES_OPTIONS", "NLSPATH", "MALLOC_CHECK_", "BASH_ENV", "ENV", "SHELLOPTS", "IFS",
    "HOME", "USER", "LOGNAME", "MASTER_PORT",
})
# What the API shows in place of each of another member's --env values (an API key, say).
ENV_VALUE_MASK = "***"
SHA256 = r"^[0-9a-f]{64}$"
ENV_REF = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


def env_name_problem(name: str) -> str | None:
    """Why a member may not set this environment variable, or None when they may."""
    if not ENV_NAME.match(name):
        return "is not a variable name (letters, digits and '_', not starting with a digit)"
    upper = name.upper()
    if upper.startswith(ENV_NAME_PREFIX_REFUSED) or upper in ENV_NAMES_REFUSED:
        return "is set by gpulab or changes how programs load; choose another name"
    return None


def _not_the_mask(value: str) -> str:
    # Sent back only by copying another member's job (a clone): never the value anyone meant.
    if value == ENV_VALUE_MASK:
        raise ValueError(f"{ENV_VALUE_MASK!r} is how gpulab hides another member's value, not a value: "
                         "give the real one")
    return value


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(..., min_length=1, max_length=1024,
                            description="the command and its arguments, run without a shell")
    bundle: str | None = Field(None, pattern=SHA256,
                               description="sha256 of an uploaded bundle (POST /bundles); none: an empty folder")
    server_dir: str | None = Field(None, max_length=4096,
                                   description="a folder on the server to run in instead of a bundle "
                                   "(only under GPULAB_COMMAND_SERVER_DIRS; outputs: GPULAB_OUTPUT_DIR only)")
    env: dict[str, Annotated[str, AfterValidator(_not_the_mask)]] = Field(
        default_factory=dict, max_length=128, description="extra environment variables")
    python_env: str | None = Field(None, pattern=ENV_REF, description="a registered Python environment (GET /envs)")
    requeue: bool = Field(False, description="run it again if its worker is lost (only if it is safe to rerun)")

    @field_validator("argv")
    @classmethod
    def _plain_args(cls, argv: list[str]) -> list[str]:
        if not argv[0]:
            raise ValueError("argv[0] (the program) is empty")
        for i, arg in enumerate(argv):
            if "\0" in arg or len(arg) > 8192:
                raise ValueError(f"argv[{i}] holds a NUL byte or is longer than 8192 characters")
        return argv

    @field_validator("server_dir")
    @classmethod
    def _absolute_plain(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or ".." in value.split("/") or "\0" in value):
            raise ValueError("must be an absolute path without '..'")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Params:
        if self.bundle and self.server_dir:
            raise ValueError("give a bundle or a server_dir, not both")
        return self

    @field_validator("env")
    @classmethod
    def _allowed_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            problem = env_name_problem(name)
            if problem:
                raise ValueError(f"{name} {problem}")
            if "\0" in value or len(value) > 32768:
                raise ValueError(f"the value of {name} holds a NUL byte or is longer than 32768 characters")
        return env


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # A command needs a worker's accounts, folders and device: it never runs in-process.
    raise JobError("command jobs run on a gpulab worker (gpulab submit -- CMD ...), not with gpulab run")


KIND = JobKind(name="command", params=Params, run=run, admin_enabled_only=True,
               summary="run your own program (any command) on the job's device, as your Unix user")
