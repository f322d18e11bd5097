"""A killed worker's unacknowledged messages go back to its queue at the next start.

A real kombu consumer takes a message and is killed before it acknowledges it, which leaves
the message in kombu's `unacked` hash until the visibility timeout (8 days by default).
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import redis

from service.queues import RUN_JOB, UNACKED_KEY, make_celery, restore_unacked
from service.settings import Settings
from tests.conftest import next_redis_url

# Takes one message from the queue named in argv and dies without acknowledging it.
TAKE_AND_DIE = """
import os, signal, sys
from kombu import Connection, Consumer, Queue
with Connection(sys.argv[1]) as conn:
    def die(body, message):
        print("took", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    with Consumer(conn, [Queue(sys.argv[2], routing_key=sys.argv[2])], callbacks=[die], accept=["json"]):
        conn.drain_events(timeout=20)
"""


def test_a_killed_consumers_message_is_restored_to_its_own_queue_only(tmp_path) -> None:
    url = next_redis_url()  # a database of this run's own: a local gpulab may be using 0
    client = redis.Redis.from_url(url)
    mine, other = f"gpulab.t{uuid.uuid4().hex[:6]}.dev.a", f"gpulab.t{uuid.uuid4().hex[:6]}.dev.b"
    celery = make_celery(Settings(redis_url=url, state_dir=tmp_path))
    for queue in (mine, other):
        celery.send_task(RUN_JOB, args=[1, 1], queue=queue)
        taken = subprocess.run([sys.executable, "-c", TAKE_AND_DIE, url, queue], capture_output=True,
                               text=True, timeout=60)
        assert "took" in taken.stdout, taken.stderr
        assert client.llen(queue) == 0
    assert restore_unacked(url, mine) == 1
    assert client.llen(mine) == 1  # back in line for the next worker of that device
    assert client.llen(other) == 0  # another device's (or installation's) is not touched
    assert restore_unacked(url, mine) == 0
    left = [v for v in client.hvals(UNACKED_KEY) if other.encode() in v]
    assert len(left) == 1
