"""Bearer tokens: shown once, stored as sha256 hashes."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "glab_"


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token. Tokens are random, so a plain hash is enough (no salt)."""
    return hashlib.sha256(token.encode()).hexdigest()
