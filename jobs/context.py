"""Job contexts: the shared file layout, and the in-process one used by `gpulab run` and tests.

The worker's context (worker/context.py) extends `FileContext` and records what the job
reports in the database; `LocalContext` keeps it in memory, so job code runs the same way
in both places.
"""

from __future__ import annotations

import mimetypes
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.artifacts import record_artifacts

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CHECKPOINT_NAME = "checkpoint.pt"


def is_safe_artifact_name(name: str) -> bool:
    """A plain file name: no folders, no leading dot, nothing a path could escape with."""
    return bool(SAFE_NAME.match(name)) and ".." not in name


def job_dir(artifacts_root: Path, job_id: int | str) -> Path:
    """The folder holding one job's artifacts and checkpoint."""
    return artifacts_root / str(job_id)


# Files a training job writes that the system's MIME table gets wrong or does not know
# (it calls a PyTorch `.pt` checkpoint an SNES page table).
ML_TYPES = {".pt": "application/octet-stream", ".pth": "application/octet-stream",
            ".ckpt": "application/octet-stream", ".safetensors": "application/octet-stream",
            ".npy": "application/octet-stream", ".npz": "application/zip", ".jsonl": "application/jsonl"}


def guess_content_type(name: str) -> str:
    """The content type recorded for an artifact whose job named none."""
    suffix = Path(name).suffix.lower()
    if suffix in ML_TYPES:
        return ML_TYPES[suffix]
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


@dataclass
class Artifact:
    name: str
    content_type: str


class FileContext:
    """Artifacts, checkpoints and the links to other jobs' checkpoints, on the lab's disk."""

    def __init__(self, *, artifacts_root: Path, job_id: int | str, device: str, seed: int):
        self.artifacts_root = Path(artifacts_root)
        self.job_id = job_id
        self.device = device
        self.seed = seed
        self.artifacts: dict[str, Artifact] = {}

    @property
    def dir(self) -> Path:
        return job_dir(self.artifacts_root, self.job_id)

    def artifact_path(self, name: str, content_type: str | None = None) -> Path:
        if not is_safe_artifact_name(name):
            raise ValueError(f"artifact name {name!r} is not a plain file name")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.artifacts[name] = Artifact(name, content_type or guess_content_type(name))
        return self.dir / name

    def checkpoint_path(self) -> Path:
        return self.artifact_path(CHECKPOINT_NAME, "application/x-pytorch-checkpoint")

    def resume_state(self) -> dict[str, Any] | None:
        path = self.dir / CHECKPOINT_NAME
        if not path.exists():
            return None
        return _load_checkpoint(path)

    def checkpoint_source(self, job_id: int) -> str:
        return f"job {job_id}"

    def load_job_checkpoint(self, job_id: int) -> dict[str, Any]:
        path = job_dir(self.artifacts_root, job_id) / CHECKPOINT_NAME
        if not path.exists():
            raise FileNotFoundError(f"job {job_id} left no checkpoint at {path}")
        return _load_checkpoint(path)

    def existing_artifacts(self, *, disk_full: bool = False) -> list[tuple[Artifact, int]]:
        """The artifacts the job announced and actually wrote, with their sizes: regular files
        in the job's folder only (never a link), and none after a full disk (see record_artifacts)."""
        recorded = record_artifacts(self.dir, self.artifacts, disk_full=disk_full)
        return [(self.artifacts[name], size) for name, size in recorded]


def _load_checkpoint(path: Path) -> dict[str, Any]:
    # torch is imported here, not at module level: the API imports this package too.
    import torch

    # weights_only: a checkpoint is data; loading it never runs code from the file.
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass
class Recorded:
    logs: list[str] = field(default_factory=list)
    progress: list[tuple[int, int]] = field(default_factory=list)
    metrics: list[tuple[str, float, int | None]] = field(default_factory=list)


class LocalContext(FileContext):
    """Runs a job in this process: what it reports is kept in memory (and echoed if asked)."""

    def __init__(
        self,
        *,
        artifacts_root: Path,
        job_id: int | str = "local",
        device: str = "cpu",
        seed: int = 0,
        echo: bool = False,
        stop_after_s: float | None = None,
    ):
        super().__init__(artifacts_root=artifacts_root, job_id=job_id, device=device, seed=seed)
        self.recorded = Recorded()
        self.echo = echo
        self._deadline = None if stop_after_s is None else time.monotonic() + stop_after_s

    def log(self, message: str) -> None:
        self.recorded.logs.append(message)
        if self.echo:
            print(message, flush=True)

    def progress(self, step: int, total: int, message: str | None = None) -> None:
        self.recorded.progress.append((step, total))
        if message:
            self.log(message)

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self.recorded.metrics.append((name, float(value), step))

    def should_stop(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def metric_values(self, name: str) -> list[float]:
        return [v for n, v, _ in self.recorded.metrics if n == name]
