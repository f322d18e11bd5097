"""Writes that end a job survive a database outage: retried until written, never dropped."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger("gpulab.worker")
T = TypeVar("T")

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 3.0  # a database back after an outage takes the outcome within this


def is_transient(exc: BaseException) -> bool:
    """Whether a database error passes on its own (a restart, a cut connection, a busy SQLite)."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def until_written(what: str, write: Callable[[], T]) -> T:
    """Call `write` until it succeeds; a passing database fault is waited out, others raise."""
    delay = RETRY_FIRST_S
    failures = 0
    while True:
        try:
            return write()
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            failures += 1
            if failures == 1 or failures % 20 == 0:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("%s not written yet (%s); kept and retried until the database takes it",
                            what, first[:200])
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
