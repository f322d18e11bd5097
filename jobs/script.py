"""`script`: a member's own Python file, run in a child process group pinned to the job's device.

Off unless an admin sets GPULAB_ENABLE_SCRIPT_KIND=true: it runs arbitrary code as the
worker's user. The script's output becomes the job's log. To report progress, metrics and a
result, a script prints lines of the form `GPULAB {json}` — `jobs.report` does it for you:

    from jobs import report
    report.progress(step, total)
    report.metric("loss", 0.25, step)
    report.result({"accuracy": 0.98})

The process runs in its own process group (so a cancel or a time limit ends its children
too), with the job's artifact folder as its working directory and GPULAB_ARTIFACTS_DIR set.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobs.base import JobContext, JobError, JobKind

PREFIX = "GPULAB "
STOP_GRACE_S = 5.0


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., max_length=4096, description="absolute path of the .py file on the lab's disk")
    args: list[str] = Field(default_factory=list, max_length=256)

    @field_validator("path")
    @classmethod
    def _absolute_py(cls, value: str) -> str:
        if not (value.startswith("/") and value.endswith(".py")):
            raise ValueError("must be an absolute path to a .py file")
        return value


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _stop(proc: subprocess.Popen[str]) -> None:
    """TERM the whole process group, then KILL what is left after a grace period."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def _handle(line: str, ctx: JobContext, result: dict[str, Any]) -> None:
    if not line.startswith(PREFIX):
        ctx.log(line)
        return
    try:
        msg = json.loads(line[len(PREFIX):])
        if "progress" in msg:
            step, total = msg["progress"]
            ctx.progress(int(step), int(total))
        elif "metric" in msg:
            m = msg["metric"]
            ctx.metric(str(m["name"]), float(m["value"]), m.get("step"))
        elif "result" in msg and isinstance(msg["result"], dict):
            result.update(msg["result"])
        else:
            ctx.log(line)
    except (ValueError, KeyError, TypeError):
        ctx.log(line)  # not a report after all: keep it as output


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    path = Path(params.path)
    if not path.is_file():
        raise JobError(f"params.path: {params.path} is not a file on this server")
    workdir = ctx.artifact_path("script.log", "text/plain").parent
    env = {**os.environ, "GPULAB_ARTIFACTS_DIR": str(workdir), "GPULAB_JOB_ID": str(ctx.job_id),
           "GPULAB_DEVICE": ctx.device, "GPULAB_SEED": str(ctx.seed), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(path), *params.args], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    result: dict[str, Any] = {}
    tail: deque[str] = deque(maxlen=20)
    started = time.monotonic()
    stopped = False
    try:
        with open(workdir / "script.log", "w") as log:
            while True:
                try:
                    line = lines.get(timeout=0.5)
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                if line:
                    log.write(line + "\n")
                    tail.append(line)
                    _handle(line, ctx, result)
                if ctx.should_stop():
                    stopped = True
                    break
    finally:
        # A cancel, the time limit (raised into this thread) or an error: never leave it running.
        _stop(proc)
    code = proc.wait()
    if stopped:
        return {**result, "stopped_early": True, "exit_code": code}
    if code != 0:
        raise JobError(f"script exited with code {code}; last output:\n" + "\n".join(tail))
    return {**result, "exit_code": code, "seconds": round(time.monotonic() - started, 3)}


KIND = JobKind(name="script", params=Params, run=run, admin_enabled_only=True,
               summary="run your own Python file on the job's device (an admin enables it)")
