"""gpulab's worker: one Celery worker per device, pinned to it, running jobs in warm children."""
