"""Report progress, metrics, a result and artifacts to gpulab from a command job.

One file, standard library only: gpulab puts it on every command job's PYTHONPATH, so
`import gpulab_report` works in any environment. Each call prints one line `GPULAB {json}`;
any program (not only Python) may print those lines itself. Outside gpulab the lines are
harmless output.

    import gpulab_report as gr
    gr.progress(step, total)
    gr.metric("loss", 0.25, step)
    gr.result({"accuracy": 0.98})
    gr.artifact("plots/curve.png")      # kept even if unchanged, under its file name
"""

from __future__ import annotations

import json
import sys
from typing import Any

PREFIX = "GPULAB "


def _emit(payload: dict[str, Any]) -> None:
    # The whole line in one write: torchrun's ranks run unbuffered (-u) and share the job's one
    # pipe, and a line written in pieces (as print writes its text, then its newline) can get
    # another rank's output in between; one write up to PIPE_BUF bytes arrives whole.
    sys.stdout.write(PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def progress(step: int, total: int) -> None:
    """`step` of `total` steps are done."""
    _emit({"progress": [int(step), int(total)]})


def metric(name: str, value: float, step: int | None = None) -> None:
    """One value of a named metric (a loss, an accuracy) at a step."""
    _emit({"metric": {"name": str(name), "value": float(value), "step": None if step is None else int(step)}})


def result(values: dict[str, Any]) -> None:
    """Values to merge into the job's result (JSON)."""
    _emit({"result": values})


def artifact(path: str, name: str | None = None) -> None:
    """Keep this file (inside the working directory or GPULAB_OUTPUT_DIR) as an artifact."""
    _emit({"artifact": {"path": str(path), "name": name}})
