"""`gpulab run`: one job in this process, without the service, in a run folder of its own.

Each run gets a new folder (`gpulab-run/<kind>-<n>/`) holding its artifacts, checkpoint,
`run.json` (kind, params, seed, device) and `result.json`. A run resumes a checkpoint only
when asked (`--resume DIR`), and only a run of the same kind: one shared folder made a second
run silently resume the first run's checkpoint, or crash on a checkpoint of another kind.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from cli.console import err, out
from cli.errors import CliError, UsageError, describe_validation
from cli.params import build_params
from jobs.context import CHECKPOINT_NAME, LocalContext

RUN_FILE = "run.json"


class RunContext(LocalContext):
    """A local run: logs to stderr; another job's checkpoint from a run folder or the service."""

    def __init__(self, *, folder: Path, device: str, seed: int, from_run: Path | None, jobs_cache: Path):
        super().__init__(artifacts_root=folder.parent, job_id=folder.name, device=device, seed=seed)
        self.from_run = from_run
        self.jobs_cache = jobs_cache

    def log(self, message: str) -> None:
        self.recorded.logs.append(message)
        print(message, file=sys.stderr, flush=True)

    def checkpoint_source(self, job_id: int) -> str:
        # With --from-run, from_job is only a placeholder: the log names the folder instead.
        return f"run {self.from_run}" if self.from_run is not None else f"job {job_id}"

    def load_job_checkpoint(self, job_id: int) -> dict[str, Any]:
        if self.from_run is not None:
            path = self.from_run / CHECKPOINT_NAME
            if not path.is_file():
                raise UsageError(f"--from-run {self.from_run}: no {CHECKPOINT_NAME} there "
                                 f"(give the folder of a run that finished)")
            return _load(path)
        return _load(fetch_job_checkpoint(job_id, self.jobs_cache))


def _load(path: Path) -> dict[str, Any]:
    import torch

    # weights_only: a checkpoint is data; loading it never runs code from the file.
    return torch.load(path, map_location="cpu", weights_only=True)


def fetch_job_checkpoint(job_id: int, cache: Path) -> Path:
    """Job `job_id`'s checkpoint from the service (when logged in), kept under `cache`."""
    from cli.console import client

    dest = cache / str(job_id) / CHECKPOINT_NAME
    if dest.is_file():
        return dest
    try:
        api = client()
    except CliError:
        raise UsageError(f"job {job_id}'s checkpoint is on the service: log in (`gpulab login TOKEN`) to fetch it, "
                         f"or start from a local run folder with --from-run DIR") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".part")
    try:
        api.download(f"/jobs/{job_id}/artifacts/{CHECKPOINT_NAME}", partial)
    except CliError as exc:
        partial.unlink(missing_ok=True)
        raise CliError(f"could not fetch job {job_id}'s checkpoint from the service ({exc}); "
                       f"or start from a local run folder with --from-run DIR") from None
    partial.rename(dest)
    err.print(f"fetched job {job_id}'s checkpoint into {dest}", highlight=False)
    return dest


def new_run_folder(runs_dir: Path, kind: str) -> Path:
    """`runs_dir/<kind>-<n>` with the next free n, made now so two runs never share one."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name.rsplit("-", 1)[1]) for p in runs_dir.glob(f"{kind}-*")
             if p.name.rsplit("-", 1)[1].isdigit()]
    n = max(taken, default=0) + 1
    while True:
        folder = runs_dir / f"{kind}-{n}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1


def resumed_run(folder: Path, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The params of the run in `folder`, updated by `params`; refuses a run of another kind."""
    record = folder / RUN_FILE
    if not record.is_file():
        raise UsageError(f"--resume {folder}: not a gpulab run folder (it has no {RUN_FILE})")
    earlier = json.loads(record.read_text())
    if earlier.get("kind") != kind:
        raise UsageError(f"--resume {folder}: that is a {earlier.get('kind')} run; "
                         f"it can only resume as {earlier.get('kind')}")
    return {**earlier.get("params", {}), **params}


def run(
    kind: str = typer.Argument(..., help="the job kind (gpulab kinds lists them)"),
    param: list[str] = typer.Option([], "-p", "--param", help="key=value, repeatable; a list param takes several"),
    device: str = typer.Option("cpu", "--device", "-d", help="cpu or cuda:0"),
    seed: int = typer.Option(0),
    runs_dir: Path = typer.Option(Path("gpulab-run"), "--runs-dir", help="each run gets a new folder in here"),
    resume: Path | None = typer.Option(None, "--resume", help="continue the run in this folder from its checkpoint"),
    from_run: Path | None = typer.Option(None, "--from-run",
                                         help="a local run folder whose checkpoint a from_job kind starts from"),
) -> None:
    """Run one job in this process, without the service, and print its result as JSON."""
    from pydantic import ValidationError

    from jobs.registry import get_kind

    kind_obj = get_kind(kind)
    raw = build_params(param, kind_obj.params.model_json_schema())
    if from_run is not None:
        if not kind_obj.from_job_param:
            raise UsageError(f"--from-run: {kind} does not start from another job's checkpoint")
        # from_job names a service job; with a local folder it only needs a placeholder.
        raw.setdefault(kind_obj.from_job_param, 1)
    if resume is not None:
        raw = resumed_run(resume, kind, raw)
    try:
        params = kind_obj.validate(raw)
    except ValidationError as exc:
        raise UsageError(f"{kind}: {describe_validation(exc, prefix='-p ')} (`gpulab kinds` lists the parameters)") \
            from None
    jobs_cache = runs_dir / ".jobs"
    if kind_obj.from_job_param and from_run is None:
        # Fetched before the run's folder is made: a run that cannot start leaves nothing behind.
        fetch_job_checkpoint(int(getattr(params, kind_obj.from_job_param)), jobs_cache)
    folder = resume if resume is not None else new_run_folder(runs_dir, kind)
    (folder / RUN_FILE).write_text(json.dumps({
        "kind": kind, "params": params.model_dump(mode="json"), "seed": seed, "device": device,
        "from_run": None if from_run is None else str(from_run),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds")}, indent=2))
    err.print(f"{'resuming' if resume is not None else 'running'} {kind} in {folder}", highlight=False)
    ctx = RunContext(folder=folder, device=device, seed=seed, from_run=from_run, jobs_cache=jobs_cache)
    result = kind_obj.run(params, ctx)
    (folder / "result.json").write_text(json.dumps(result, indent=2, default=str))
    out.print_json(data=result)
