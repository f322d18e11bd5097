"""A job's context in the worker: the time limit survives landing inside a database call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.engine.default import DefaultExecutionContext

from service.db import Database
from worker.context import WorkerContext


def limit_fires_in_the_next_statement(monkeypatch: pytest.MonkeyPatch) -> None:
    """Raise the soft time limit (as Celery's signal handler does) while SQLAlchemy builds the next
    statement's execution context, once: SQLAlchemy then wraps it in a StatementError."""
    real = DefaultExecutionContext._init_compiled.__func__  # type: ignore[attr-defined]

    def fire(cls: Any, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(DefaultExecutionContext, "_init_compiled", classmethod(real))
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(DefaultExecutionContext, "_init_compiled", classmethod(fire))


def test_the_time_limit_inside_a_database_call_is_raised_not_taken_for_a_database_fault(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = WorkerContext(db=db, job_id=1, attempt=1, device="testhost/cpu", seed=0, artifacts_root=tmp_path,
                        flush_s=3600, flush_lines=1000)
    # The cancel poll: a database fault there fails the job as the member's error.
    limit_fires_in_the_next_statement(monkeypatch)
    with pytest.raises(SoftTimeLimitExceeded):
        ctx.should_stop()
    # The log's flush: a fault there that is not passing drops the batch and the job goes on.
    ctx.log("last words")
    limit_fires_in_the_next_statement(monkeypatch)
    with pytest.raises(SoftTimeLimitExceeded):
        ctx.flush()
    assert [e["message"] for e in ctx._buffer] == ["last words"]  # kept for the last flush
