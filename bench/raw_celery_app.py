"""The baseline for bench/dispatch.py: a bare Celery task on the same Redis, configured like gpulab's."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
app = Celery("raw", broker=BROKER)
app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True, task_acks_late=True,
                worker_prefetch_multiplier=1, worker_hijack_root_logger=False,
                # bench/dispatch.py --celery-tools measures what these cost (gpulab: remote control on).
                worker_enable_remote_control=os.environ.get("BENCH_REMOTE_CONTROL", "1") == "1",
                worker_send_task_events=os.environ.get("BENCH_EVENTS") == "1",
                task_send_sent_event=os.environ.get("BENCH_EVENTS") == "1")
_store = redis.Redis.from_url(BROKER)


@app.task(name="raw.start")
def start(key: str, sent_at: float) -> None:
    _store.hset("raw:starts", key, f"{sent_at},{time.time()}")
