"""The contract between a job kind and whatever runs it (a worker child, or `gpulab run`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel


class JobError(Exception):
    """A job's own, expected failure: the message is shown to the member as the reason."""


class JobContext(Protocol):
    """What a running job may use. Everything it reports is recorded for the member."""

    device: str  # "cpu" or "cuda:0": the job always sees its one GPU as cuda:0
    seed: int

    @property
    def job_id(self) -> int | str | None:
        """The job's id ("run" under `gpulab run`)."""

    def log(self, message: str) -> None:
        """Append one line to the job's log."""

    def progress(self, step: int, total: int, message: str | None = None) -> None:
        """Report that `step` of `total` steps are done."""

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        """Record one value of a named metric (a loss, an accuracy) at a step."""

    def artifact_path(self, name: str, content_type: str | None = None) -> Path:
        """A path to write the artifact `name` to; it is recorded when the job ends."""

    def should_stop(self) -> bool:
        """True once the job was cancelled: return at the next step."""

    def checkpoint_path(self) -> Path:
        """Where this job keeps its checkpoint, the same path across retries."""

    def resume_state(self) -> dict[str, Any] | None:
        """The checkpoint a retried attempt left behind, or None."""

    def load_job_checkpoint(self, job_id: int) -> dict[str, Any]:
        """Another (earlier, succeeded) job's checkpoint, for fine-tuning from it."""

    def checkpoint_source(self, job_id: int) -> str:
        """How the log names where that checkpoint came from: "job 7", or a local run's folder."""


@dataclass(frozen=True)
class JobKind:
    """One kind of job: its name, its parameters model and the function that runs it."""

    name: str
    params: type[BaseModel]
    run: Callable[[Any, JobContext], dict[str, Any]]
    summary: str
    # Whether the kind needs an admin to turn it on (it runs arbitrary code).
    admin_enabled_only: bool = False
    # Kinds that read another job's checkpoint name the parameter that holds that job's id.
    from_job_param: str | None = None

    def validate(self, params: dict[str, Any]) -> BaseModel:
        """Parse raw params into the kind's model (pydantic raises ValidationError)."""
        return self.params.model_validate(params)
