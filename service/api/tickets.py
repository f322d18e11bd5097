"""Stream tickets: how a browser's EventSource (which cannot send headers) follows a job.

Tokens never travel in URLs, because access logs and proxies keep URLs. The dashboard
POSTs with its Bearer token and gets a ticket: random, single-use, valid for TICKET_TTL_S,
bound to one job, stored in Redis only as a hash beside the hash of the token it came from
(so a revoked token ends the stream that its ticket opened).
"""

from __future__ import annotations

import hashlib
import json
import secrets

import redis

TICKET_TTL_S = 30
TICKET_PREFIX = "glst_"


def _key(ticket: str) -> str:
    return "gpulab:stream-ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


def issue_ticket(client: redis.Redis, *, token_hash: str, job_id: int) -> str:
    """A fresh ticket for following one job's events."""
    ticket = TICKET_PREFIX + secrets.token_urlsafe(24)
    client.set(_key(ticket), json.dumps({"token_hash": token_hash, "job_id": job_id}), ex=TICKET_TTL_S)
    return ticket


def redeem_ticket(client: redis.Redis, *, ticket: str, job_id: int) -> str | None:
    """The token hash a ticket was issued for, once: GETDEL makes a second use find nothing."""
    raw = client.getdel(_key(ticket))
    if raw is None:
        return None
    data = json.loads(raw)
    return data["token_hash"] if data.get("job_id") == job_id else None
