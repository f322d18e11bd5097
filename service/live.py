"""Live notifications over Redis pub/sub, sent only after the transaction that caused them commits.

Store functions queue what to publish in `session.info`; the `after_commit` hook sends it.
Redis is a doorbell here, never the record: a lost message costs latency (followers
catch up from the database, the dispatcher runs on a timer too), not data.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

WAKE_CHANNEL = "gpulab:wake"
JOBS_CHANNEL = "gpulab:jobs"


def job_channel(job_id: int) -> str:
    """The channel carrying one job's events."""
    return f"gpulab:job:{job_id}"


def queue_publish(session: Session, channel: str, payload: Any) -> None:
    """Publish `payload` on `channel` once this session's transaction commits."""
    session.info.setdefault("gpulab_publish", []).append((channel, payload))


def queue_wake(session: Session, why: str) -> None:
    """Wake the dispatcher after this commit."""
    queue_publish(session, WAKE_CHANNEL, {"why": why})


class Publisher:
    """Sends queued messages after commit; a Redis failure is logged, never raised."""

    def __init__(self, redis_url: str):
        self._redis_url = redis_url
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self._redis_url, socket_connect_timeout=2, socket_timeout=2
            )
        return self._client

    def publish(self, channel: str, payload: Any) -> None:
        try:
            self.client.publish(channel, json.dumps(payload, default=str))
        except redis.RedisError as exc:
            log.warning("live publish on %s failed (%s): followers catch up from the database", channel, exc)

    def attach(self, *factories: sessionmaker[Session]) -> None:
        """Send what sessions of these factories queued, after each commit."""
        for factory in factories:
            event.listen(factory, "after_commit", self._after_commit)
            event.listen(factory, "after_rollback", _drop_queued)

    def _after_commit(self, session: Session) -> None:
        for channel, payload in session.info.pop("gpulab_publish", []):
            self.publish(channel, payload)


def _drop_queued(session: Session) -> None:
    session.info.pop("gpulab_publish", None)


