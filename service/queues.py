"""The Celery side that the service and the workers share: app factory, queue and task names.

The service only ever *sends* `run_job(job_id, attempt)` to one device's queue; the worker
module registers the task of that name. JSON is the only serializer accepted anywhere.
"""

from __future__ import annotations

import re

from celery import Celery

from service.settings import Settings

RUN_JOB = "gpulab.run_job"


def device_queue(device_id: str) -> str:
    """The Redis queue that only the worker of `device_id` consumes."""
    return "gpulab.dev." + re.sub(r"[^A-Za-z0-9_.-]", "_", device_id)


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for gpulab: JSON, late acks, prefetch 1, no result backend."""
    app = Celery("gpulab", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        task_ignore_result=True,  # the database is the record, never Redis
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_create_missing_queues=True,
        task_default_queue="gpulab.default",
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Must outlast the longest job (checked by Settings), or Redis re-delivers it.
            "visibility_timeout": settings.visibility_timeout_s,
            # How often a worker sweeps unacked messages past that timeout back to the queue
            # (kombu's default, ~100 s, would hide a short test timeout's redelivery).
            "unacked_restore_interval": min(10, max(1, settings.visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1 if settings.visibility_timeout_s < 600 else 10,
            "socket_connect_timeout": 3,
        },
        worker_hijack_root_logger=False,
        # Remote control lets admins use `celery -A worker.app inspect ...` and Flower see
        # the workers and their queues; task events (for Flower's task views) are a setting.
        worker_enable_remote_control=True,
        worker_send_task_events=settings.celery_events,
        task_send_sent_event=settings.celery_events,
        enable_utc=True,
    )
    return app
