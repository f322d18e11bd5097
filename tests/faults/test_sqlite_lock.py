"""The SQLite file held locked by another process (a backup, an admin's sqlite3 shell left in a
transaction): a submit answers 503 with Retry-After while a client still waits for the answer,
and works again once the lock is gone.

Before: the API waited out SQLite's 30 s busy timeout, as long as the CLI waits for any answer,
so `gpulab submit` failed with a read timeout instead of "the database is unavailable; retry".
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import bearer, own_stack
from tests.support.stack import Stack

CLIENT_TIMEOUT_S = 28.0  # under the CLI's 30 s, with room for a loaded machine


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with own_stack("sqlite", tmp_path_factory.mktemp("sqlite-lock")) as s:
        yield s


def test_a_submit_answers_503_while_another_process_holds_the_database(stack: Stack) -> None:
    path = Path(stack.env["GPULAB_DATABASE_URL"].removeprefix("sqlite:///"))
    body = {"kind": "test-echo", "params": {"lines": 0}}
    holder = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        r = httpx.post(f"{stack.url}/jobs", json=body, headers=bearer(stack.token), timeout=CLIENT_TIMEOUT_S)
        waited = time.monotonic() - started
        assert r.status_code == 503, (r.status_code, r.text, waited)
        assert r.json()["code"] == "database_unavailable" and int(r.headers["retry-after"]) > 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    job = stack.submit("test-echo", {"lines": 0})
    assert stack.wait_for(job["id"])["status"] == "succeeded"
