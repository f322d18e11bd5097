"""The consumption probe: a probe not back in time stalls the device; its return revives it."""

from __future__ import annotations

import time
import uuid

import redis

from service.db import Database
from service.models import Device, DeviceState, Job
from service.scheduling.device_request import request_fields
from service.scheduling.queue_state import plan_queue
from service.settings import Settings
from service.store.devices import heartbeat, register_worker
from service.store.job_records import insert_job
from service.store.users import create_user
from tests.conftest import next_redis_url
from worker.probe import Probe

DEVICE = {"id": "testhost/cpu", "host": "testhost", "kind": "cpu", "index": None, "name": "CPU",
          "uuid": None, "memory_total_mb": 1024}


def probe_on_a_queue_nobody_reads(busy: list[bool]) -> tuple[Probe, redis.Redis, str]:
    client = redis.Redis.from_url(next_redis_url())  # never flush 0: a local gpulab may be using it
    queue = f"probe-test-{uuid.uuid4().hex}"
    probe = Probe(send=lambda: client.rpush(queue, b"probe"), busy=lambda: busy[0], period_s=0.1, timeout_s=0.5)
    return probe, client, queue


def check_until(probe: Probe, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if probe.check():
            return True
        time.sleep(0.05)
    return False


def test_a_probe_that_does_not_come_back_stalls_the_worker_and_a_message_revives_it() -> None:
    probe, client, queue = probe_on_a_queue_nobody_reads([False])
    assert check_until(probe, 5)
    assert client.llen(queue) >= 1  # Redis took the probe; nobody consumed it
    probe.received()
    assert (probe.stalled, probe.received_at is not None) == (False, True)


def test_a_full_or_paused_worker_is_never_judged() -> None:
    busy = [True]
    probe, client, queue = probe_on_a_queue_nobody_reads(busy)
    assert not check_until(probe, 1.5)  # every slot busy: nothing can be fetched, nothing sent
    assert client.llen(queue) == 0
    busy[0] = False
    probe.paused = True  # the worker stopped reading on purpose (its database is away)
    assert not check_until(probe, 1.5)
    probe.paused = False
    assert check_until(probe, 5)


def test_a_stalled_device_gets_no_job_and_says_why(db: Database, settings: Settings) -> None:
    with db.writing() as s:
        owner, _ = create_user(session=s, name="alice")
        register_worker(session=s, worker_id="w1", device=DEVICE, pid=1, slots=1)
        job, _ = insert_job(session=s, job=Job(owner_id=owner.id, kind="test-echo", params={},
                                               **request_fields("cpu"), timeout_s=60))
    with db.writing() as s:
        assert heartbeat(session=s, worker_id="w1", running_job_ids=[], stalled=True)
    with db.writing() as s:
        assert s.get(Device, DEVICE["id"]).state == DeviceState.stalled
        view = plan_queue(s, settings=settings)
        assert view.plan.placements == []
        assert view.plan.waits[job.id] == "device_stalled"
    with db.writing() as s:  # its probe came back
        assert heartbeat(session=s, worker_id="w1", running_job_ids=[], stalled=False)
    with db.writing() as s:
        assert s.get(Device, DEVICE["id"]).state == DeviceState.online
        assert plan_queue(s, settings=settings).plan.placements == [(job.id, DEVICE["id"])]
