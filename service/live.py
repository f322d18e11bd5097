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
from sqlalchemy import event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.models import Installation

log = logging.getLogger(__name__)

# This process's installation id (the `installation` table's one row). Redis pub/sub
# channels are shared by every database number of a server, and queues by every client of a
# database: each name carries the id so that two installations never hear each other.
_installation = ""
_source: sessionmaker[Session] | None = None  # where to read it when it is not known yet


def use_installation(installation_id: str) -> None:
    """Name this process's channels and queues after its installation (once, at start)."""
    global _installation
    _installation = installation_id


def installation() -> str:
    """The installation id this process uses, read from the database at first need."""
    if not _installation and _source is not None:
        try:
            with _source() as session:
                use_installation(read_installation(session))
        except SQLAlchemyError as exc:  # the database is down: the caller decides
            log.warning("the installation id cannot be read yet (%s)", type(exc).__name__)
    return _installation


def read_installation(session: Session) -> str:
    """The installation id stored in the database (created at the first migrate)."""
    found = session.scalar(select(Installation.id).limit(1))
    if found is None:
        raise RuntimeError("the database has no installation id: run `gpulab migrate`")
    return found


def _channel(name: str) -> str:
    # Without an id yet (the database down at start), a message goes unheard: followers catch
    # up from the database, and the dispatcher runs on its timer.
    inst = installation()
    return f"gpulab:{inst}:{name}" if inst else f"gpulab:{name}"


def wake_channel() -> str:
    """The channel that wakes the dispatcher."""
    return _channel("wake")


def jobs_channel() -> str:
    """The channel carrying every job's status changes."""
    return _channel("jobs")


def job_channel(job_id: int) -> str:
    """The channel carrying one job's events."""
    return _channel(f"job:{job_id}")


def queue_publish(session: Session, channel: str, payload: Any) -> None:
    """Publish `payload` on `channel` once this session's transaction commits."""
    session.info.setdefault("gpulab_publish", []).append((channel, payload))


def queue_wake(session: Session, why: str) -> None:
    """Wake the dispatcher after this commit."""
    queue_publish(session, wake_channel(), {"why": why})


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
        """Send what sessions of these factories queued, after each commit.

        The first factory also names the installation, when this process has not yet: every
        part that publishes attaches a publisher, so every part agrees on the names.
        """
        global _source
        if factories:
            _source = _source or factories[0]
            installation()
        for factory in factories:
            event.listen(factory, "after_commit", self._after_commit)
            event.listen(factory, "after_rollback", _drop_queued)

    def hold(self, session: Session) -> None:
        """Keep what this session's commits queue until `release`: a submit sends its job to the
        worker first, the doorbells after (one Redis round trip less before the job starts)."""
        session.info["gpulab_hold"] = True

    def release(self, session: Session) -> None:
        """Publish what was held (see `hold`), and stop holding."""
        session.info.pop("gpulab_hold", None)
        self._after_commit(session)

    def _after_commit(self, session: Session) -> None:
        if session.info.get("gpulab_hold"):
            return
        queued = session.info.pop("gpulab_publish", [])
        if len(queued) == 1:
            self.publish(*queued[0])
        elif queued:
            self.publish_many(queued)

    def publish_many(self, messages: list[tuple[str, Any]]) -> None:
        """Publish in one round trip (a dispatch queues two to four messages)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for channel, payload in messages:
                pipe.publish(channel, json.dumps(payload, default=str))
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("live publish of %d message(s) failed (%s): followers catch up from the database",
                        len(messages), exc)


def _drop_queued(session: Session) -> None:
    session.info.pop("gpulab_publish", None)


