"""Which job kinds exist: the built-in ones plus those of the `gpulab.jobs` entry-point group.

A lab adds its own kinds from its own package:

    [project.entry-points."gpulab.jobs"]
    my-kind = "mylab.kinds:KIND"      # a jobs.JobKind

Modules are imported lazily and none imports torch at import time, so listing kinds and
validating params stays cheap for the API.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from jobs.base import JobKind

ENTRY_POINT_GROUP = "gpulab.jobs"

# name -> module holding `KIND`; the order is the learning path's.
BUILTIN: dict[str, str] = {
    "tensor-anatomy": "jobs.tensor_anatomy",
    "device-compare": "jobs.device_compare",
    "autograd": "jobs.autograd",
    "activations": "jobs.activations",
    "regression": "jobs.regression",
    "classify-digits": "jobs.classify_digits",
    "gan": "jobs.gan",
    "dcgan": "jobs.dcgan",
    "finetune": "jobs.finetune",
    "features": "jobs.features",
    "char-rnn": "jobs.char_rnn",
    "char-rnn-sample": "jobs.char_rnn_sample",
    "command": "jobs.command",
}


class UnknownKind(KeyError):
    """No job kind has this name."""


def _load_module_kind(module: str) -> JobKind:
    kind = importlib.import_module(module).KIND
    if not isinstance(kind, JobKind):
        raise TypeError(f"{module}.KIND is not a jobs.JobKind")
    return kind


@cache
def _all_kinds() -> dict[str, JobKind]:
    kinds: dict[str, JobKind] = {}
    for name, module in BUILTIN.items():
        kinds[name] = _load_module_kind(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        kind = ep.load()
        if not isinstance(kind, JobKind):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a jobs.JobKind")
        if kind.name != ep.name:
            raise ValueError(f"entry point {ep.name} names a kind called {kind.name!r}")
        kinds.setdefault(kind.name, kind)  # a plug-in never shadows a built-in kind
    return kinds


def list_kinds() -> list[JobKind]:
    """Every known job kind, built-in ones first."""
    return list(_all_kinds().values())


def get_kind(name: str) -> JobKind:
    """The job kind called `name`; raises UnknownKind."""
    try:
        return _all_kinds()[name]
    except KeyError:
        raise UnknownKind(name) from None
