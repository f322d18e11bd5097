"""Whom a token belongs to, remembered for a few seconds by this API process.

Every request authenticates; looking the token's hash up costs a statement and a commit
(and, before this cache, a thread hop), which any read paid on top of its own query. A
lookup is trusted for `GPULAB_TOKEN_CACHE_S` seconds from the moment the database answered,
never extended by use: a revoked token (or a member's changed Unix account) is seen by every
request within that time, as an open stream sees it within its own re-check (streams.py).
Only tokens the database knows are remembered, so unknown tokens cannot fill the cache, and
a new token works at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from service.models import User

# Far more than a lab's members have tokens: past it the oldest lookups are forgotten.
MAX_ENTRIES = 4096


@dataclass(frozen=True)
class _Known:
    expires: float
    id: int
    name: str
    is_admin: bool
    unix_user: str | None


class TokenCache:
    """Token hash → the user it belonged to when the database last said so. Used from the
    event loop only (one thread), so it needs no lock."""

    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = MAX_ENTRIES):
        self.ttl_s = ttl_s
        self._clock = clock
        self._max = max_entries
        self._known: OrderedDict[str, _Known] = OrderedDict()

    def get(self, token_hash: str) -> User | None:
        """A fresh detached copy of the user, if the lookup is recent enough; None otherwise."""
        known = self._known.get(token_hash)
        if known is None:
            return None
        if known.expires <= self._clock():
            del self._known[token_hash]
            return None
        # A copy per request: no route can change (or attach to its session) another's user.
        return User(id=known.id, name=known.name, is_admin=known.is_admin, unix_user=known.unix_user)

    def put(self, token_hash: str, user: User) -> None:
        """Remember a lookup the database just answered."""
        if self.ttl_s <= 0:
            return
        self._known.pop(token_hash, None)
        while len(self._known) >= self._max:
            self._known.popitem(last=False)
        self._known[token_hash] = _Known(self._clock() + self.ttl_s, user.id, user.name, user.is_admin,
                                         user.unix_user)

    def __len__(self) -> int:
        return len(self._known)
