"""run_job's Celery request: a child lost under a job is one line naming it, not a traceback.

When a job's process dies (the OOM killer, kill -9, a CUDA fault's exit), Celery logs its own
`WorkerLostError` with a multi-line traceback that names a Celery task id, not the job. What
happens next is gpulab's: the message goes back to the queue (`task_reject_on_worker_lost`)
and claims nothing when redelivered, while the parent's watch (worker/heartbeat.py) settles
the job at its next beat. The traceback stays at DEBUG for whoever debugs Celery itself.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from billiard.exceptions import WorkerLostError
from celery.worker.request import Request

log = logging.getLogger("gpulab.worker")


def _how(exc: BaseException) -> str:
    """'signal 9 (SIGKILL)' or 'exitcode 70' from billiard's "Worker exited prematurely: …"."""
    found = re.search(r"prematurely: (.+?)(?: Job: \d+)?\.?$", str(exc))
    return found[1] if found else str(exc)


class JobRequest(Request):  # type: ignore[misc]
    """A run_job message being handled by this worker's parent."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # an ExceptionWithTraceback's own
        # Billiard may report the child's exit as SystemExit before it has gone: Celery treats it
        # as a lost child too, unless the request was cancelled or revoked (no loss then).
        lost = isinstance(exc, WorkerLostError) or (
            isinstance(exc, (SystemExit, KeyboardInterrupt)) and not (self._already_cancelled or self._already_revoked))
        if lost:
            job_id, attempt = (list(self.args) + [None, None])[:2]
            log.error("job %s attempt %s: its process (pid %s) ended before the job did (%s); the worker's "
                      "watch settles the job at its next heartbeat: run again while attempts remain, else "
                      "failed (worker_lost), or cancelled or timed out when that is why it was killed",
                      job_id, attempt, self.worker_pid, _how(exc))
            log.debug("Celery's report of the lost process of job %s", job_id, exc_info=exc_info.exc_info)
            return_ok = True  # Celery's own error line (with its traceback) is the one left out
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
