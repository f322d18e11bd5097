"""gpulab's job library: job kinds as small modules with a `Params` model and `run(params, ctx)`.

This package never imports `service` or `worker`; a job module imports torch inside `run()`.
"""

from jobs.base import JobContext, JobError, JobKind
from jobs.registry import get_kind, list_kinds

__all__ = ["JobContext", "JobError", "JobKind", "get_kind", "list_kinds"]
