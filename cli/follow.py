"""Following a job from the terminal: its log as it comes, a progress bar, reconnects."""

from __future__ import annotations

import time
from typing import TextIO

import httpx
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from cli.client import EXIT_JOB_FAILED, EXIT_OK, Api, CliError
from cli.console import err

FINAL = {"succeeded", "failed", "cancelled"}


def follow(api: Api, job_id: int, *, log_to: TextIO | None = None, show_progress: bool = True,
           reconnect_for_s: float = 300.0) -> str:
    """Stream a job's events until it ends; resume after a dropped stream. Returns its status.

    Log lines go to `log_to` as they are (unwrapped), or beside the progress on stderr when
    it is None; the progress bar and status lines always go to stderr.
    """
    last = 0
    status = "pending"
    gave_up_at: float | None = None
    # On a terminal, rich prints stdout's lines above the bar; a pipe gets them untouched.
    progress = Progress(TextColumn("[bold]job {task.fields[job]}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=err, transient=True, disable=not show_progress,
                        redirect_stdout=log_to is not None and log_to.isatty())
    console = err
    task = progress.add_task("", total=None, job=job_id)
    with progress:
        while status not in FINAL:
            try:
                for event in api.stream_events(job_id, last):
                    gave_up_at = None
                    last = max(last, event["seq"])
                    status = _show(event, progress, task, log_to) or status
                # The server closes the stream after the final status; re-read to be sure.
                status = api.get(f"/jobs/{job_id}")["status"]
            except (httpx.TransportError, httpx.HTTPError, CliError) as exc:
                now = time.monotonic()
                gave_up_at = gave_up_at or now + reconnect_for_s
                if now > gave_up_at:
                    raise CliError(f"lost the stream of job {job_id} and could not resume: {exc}") from exc
                console.print(f"[yellow]stream dropped ({exc}); resuming after event {last}[/]")
                time.sleep(1.0)
    return status


def _show(event: dict, progress: Progress, task: TaskID, log_to: TextIO | None) -> str | None:
    kind = event["type"]
    data = event.get("data") or {}
    if kind == "log":
        if log_to is None:
            progress.console.print(event["message"], markup=False, highlight=False)
        else:
            log_to.write(event["message"] + "\n")
            log_to.flush()
    elif kind == "progress":
        progress.update(task, completed=data.get("step", 0), total=data.get("total") or None)
        if event["message"]:  # a kind's milestone ("epoch 3: accuracy 0.97"), as `gpulab run` prints it
            progress.console.print(event["message"], markup=False, highlight=False)
    elif kind == "status":
        status = str(data.get("status"))
        colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(status, "cyan")
        reason = f" ({data['reason']})" if data.get("reason") not in (None, "", status) else ""
        if log_to is not None:
            log_to.flush()
        progress.console.print(f"[{colour}]● {event['message']}{reason}[/]")
        return status
    return None


def exit_code_for(status: str) -> int:
    """0 only for a job that succeeded."""
    return EXIT_OK if status == "succeeded" else EXIT_JOB_FAILED
