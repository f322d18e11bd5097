"""Server-Sent Events for one job: subscribe, catch up from the database, then stream live.

Events carry their per-job `seq` as the SSE id, so a client resumes with Last-Event-ID and
duplicates (an event both caught up and published) are dropped by number. The generator is
async: a follower holds no threadpool token while it waits; database reads are short calls
in the threadpool.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from fastapi import Request

from service.api.deps import AppState, in_db_thread
from service.errors import BrokerUnavailable
from service.live import job_channel
from service.models import FINAL_STATUSES, JobStatus
from service.store import events as event_store
from service.store import job_records
from service.store.users import authenticate_hash

KEEPALIVE_S = 15.0
RESYNC_S = 5.0  # read the database again this often, in case a publish was lost
AUTH_CHECK_S = 2.0  # a stream whose token was revoked ends within this


def sse(event: dict[str, Any]) -> str:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"


def _is_final(event: dict[str, Any]) -> bool:
    return event["type"] == "status" and (event.get("data") or {}).get("status") in FINAL_STATUSES


async def subscribe(state: AppState, job_id: int) -> tuple[aioredis.Redis, Any]:
    """Subscribe to a job's channel before anything is read, so nothing falls in between."""
    client = aioredis.Redis.from_url(state.settings.redis_url, socket_connect_timeout=3)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(job_channel(job_id))
    except aioredis.RedisError as exc:
        await client.aclose()
        raise BrokerUnavailable(f"live events need Redis, which is unavailable ({exc})") from exc
    return client, pubsub


def _token_active(state: AppState, token_hash: str) -> bool:
    with state.db.reading() as session:
        return authenticate_hash(session=session, token_hash=token_hash) is not None


async def follow_job(
    state: AppState, request: Request, job_id: int, after: int, subscription: tuple[aioredis.Redis, Any],
    *, token_hash: str,
) -> AsyncIterator[str]:
    """Stream one job's events until it ends, the client leaves, or the token is revoked."""
    client, pubsub = subscription
    try:
        last = after

        def catch_up() -> tuple[list[dict[str, Any]], str]:
            with state.db.reading() as session:
                status = job_records.get_job(session=session, job_id=job_id).status
                return event_store.list_events(session=session, job_id=job_id, after_seq=last), status

        loop = asyncio.get_running_loop()
        next_resync = loop.time() + RESYNC_S
        next_keepalive = loop.time() + KEEPALIVE_S
        next_auth = loop.time() + AUTH_CHECK_S
        pending: list[dict[str, Any]] = []
        first = True
        while True:
            if first or loop.time() >= next_resync:
                caught, status = await in_db_thread(state, catch_up)
                pending.extend(caught)
                next_resync = loop.time() + RESYNC_S
                if first and not caught and JobStatus(status).is_final:
                    return  # nothing newer than the client has, and nothing more will come
                first = False
            for event in sorted(pending, key=lambda e: e["seq"]):
                if event["seq"] <= last:
                    continue
                last = event["seq"]
                yield sse(event)
                next_keepalive = loop.time() + KEEPALIVE_S
                if _is_final(event):
                    return
            pending = []
            if await request.is_disconnected():
                return
            if loop.time() >= next_auth:
                if not await in_db_thread(state, _token_active, state, token_hash):
                    yield "event: revoked\ndata: {\"detail\": \"the token was revoked\"}\n\n"
                    return
                next_auth = loop.time() + AUTH_CHECK_S
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                pending.extend(json.loads(message["data"]))
            elif loop.time() >= next_keepalive:
                yield ": keepalive\n\n"
                next_keepalive = loop.time() + KEEPALIVE_S
    finally:
        await pubsub.aclose()
        await client.aclose()
