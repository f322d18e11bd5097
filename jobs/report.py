"""For scripts run by the `script` kind: report progress, metrics and a result to gpulab.

Each call prints one line `GPULAB {json}` that the job turns into a progress step, a metric
value or the job's result; everything else the script prints becomes its log.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write("GPULAB " + json.dumps(payload) + "\n")
    sys.stdout.flush()


def progress(step: int, total: int) -> None:
    """`step` of `total` steps are done."""
    _emit({"progress": [int(step), int(total)]})


def metric(name: str, value: float, step: int | None = None) -> None:
    """One value of a named metric at a step."""
    _emit({"metric": {"name": name, "value": float(value), "step": step}})


def result(values: dict[str, Any]) -> None:
    """Values to merge into the job's result."""
    _emit({"result": values})
