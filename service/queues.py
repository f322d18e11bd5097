"""The Celery side that the service and the workers share: app factory, queue and task names.

The service only ever *sends* `run_job(job_id, attempt)` to one device's queue; the worker
module registers the task of that name. JSON is the only serializer accepted anywhere.
"""

from __future__ import annotations

import contextlib
import json
import re

import redis
from celery import Celery

from service import live
from service.settings import Settings

RUN_JOB = "gpulab.run_job"
# A tiny message a worker sends to its own queue: its arrival proves the worker consumes.
PROBE = "gpulab.probe"


def device_queue(device_id: str, installation: str | None = None) -> str:
    """The Redis queue that only the worker of `device_id` consumes, in this installation."""
    inst = live.installation() if installation is None else installation
    if installation is None and not inst:
        # A queue without the id would be shared with every installation on this Redis.
        raise RuntimeError("the installation id is unknown (is the database reachable and migrated?)")
    prefix = f"gpulab.{inst}.dev." if inst else "gpulab.dev."
    return prefix + re.sub(r"[^A-Za-z0-9_.-]", "_", device_id)


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
    if inst := live.installation():
        # Remote control and events are exchanges of their own per installation, like the job
        # queues: two installations on one Redis (their workers may share a node name, such as
        # gpulab-testhost-cpu@testhost) never answer or hear each other's `celery inspect`.
        app.conf.update(control_exchange=f"gpulab.{inst}", event_exchange=f"gpulab.{inst}.ev")
    return app


# kombu's Redis transport keeps each delivered, not yet acknowledged message in this hash
# (field: delivery tag, value: JSON [payload, exchange, routing key]) and its delivery time
# in the sorted set, until the visibility timeout restores it.
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"


def restore_unacked(redis_url: str, queue: str) -> int:
    """Put back on `queue` the messages taken from it and never acknowledged; returns how many.

    Called by a worker before it starts consuming: only one worker consumes a device's queue,
    so whatever is unacknowledged there belongs to an incarnation that is gone. Without this,
    a killed worker's messages wait out the visibility timeout (8 days by default). A stale
    message claims nothing (the attempt fences it), so putting one back is harmless.
    """
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=10)
    restored = 0
    for tag, raw in client.hscan_iter(UNACKED_KEY):
        try:
            payload, _exchange, routing_key = json.loads(raw)
        except ValueError:
            continue
        if routing_key != queue:
            continue
        with contextlib.suppress(KeyError, TypeError):  # an unusual message: restore it as it is
            payload["headers"]["redelivered"] = True
            payload["properties"]["delivery_info"]["redelivered"] = True
        pipe = client.pipeline()  # MULTI: never dropped from the hash without being requeued
        # kombu consumes with BRPOP: RPUSH puts it first in line, as kombu's own restore does.
        pipe.rpush(queue, json.dumps(payload))
        pipe.hdel(UNACKED_KEY, tag)
        pipe.zrem(UNACKED_INDEX_KEY, tag)
        pipe.execute()
        restored += 1
    client.close()
    return restored
