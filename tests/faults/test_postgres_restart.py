"""A PostgreSQL restart under ~200 submits: while it is down the API answers 503 with
Retry-After (never another 5xx), a client that retries with its Idempotency-Key gets every job
in exactly once, and every accepted job completes (none stuck `running`).

The cluster is the test's own (initdb/pg_ctl as the postgres user on a free port): the shared
server on 5432 is never restarted.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import bearer, own_stack
from tests.support import services
from tests.support.stack import Stack, free_port

SUBMITS = 200
THREADS = 8
DOWN_S = 4.0


@dataclass
class Cluster:
    bin: Path
    data: Path
    port: int
    log: Path

    def ctl(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.data),
                        "-l", str(self.log), "-w", "-t", "60", *args], check=True, capture_output=True, timeout=90)

    def start(self) -> None:
        self.ctl("-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c max_connections=200",
                 "start")

    def stop(self) -> None:
        self.ctl("-m", "fast", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/gpulab"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins or shutil.which("runuser") is None or os.geteuid() != 0:
        services.unavailable("a private PostgreSQL cluster (initdb under /usr/lib/postgresql, run as root)")
    root = Path(tempfile.mkdtemp(prefix="gpulab-pg-"))
    data = root / "data"
    shutil.chown(root, "postgres")
    os.chmod(root, 0o755)
    c = Cluster(bin=Path(bins[-1]).parent, data=data, port=free_port(), log=root / "postgres.log")
    subprocess.run(["runuser", "-u", "postgres", "--", str(c.bin / "initdb"), "-D", str(data), "-A", "trust",
                    "-U", "postgres"], check=True, capture_output=True, timeout=120)
    c.start()
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{c.port}/postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE gpulab")
    try:
        yield c
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # a failed test may have stopped it
            c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_stack(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with own_stack("postgres", tmp_path_factory.mktemp("pg-restart"), database_url=cluster.url) as stack:
        yield stack


@dataclass
class Submitter:
    """Submits jobs, each retried with its own Idempotency-Key until the API accepts it."""

    stack: Stack
    next_index: int = 0
    accepted: dict[int, int] = field(default_factory=dict)  # index → job id
    statuses: list[int] = field(default_factory=list)
    unavailable: list[httpx.Response] = field(default_factory=list)
    wrong: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> int | None:
        with self.lock:
            if self.next_index >= SUBMITS:
                return None
            self.next_index += 1
            return self.next_index - 1

    def run(self) -> None:
        with httpx.Client(base_url=self.stack.url, timeout=30, headers=bearer(self.stack.token)) as client:
            while (index := self.take()) is not None:
                self.submit(client, index)

    def submit(self, client: httpx.Client, index: int) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                r = client.post("/jobs", json={"kind": "test-echo", "params": {"lines": 0, "steps": 0}},
                                headers={"Idempotency-Key": f"restart-{index}"})
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            with self.lock:
                self.statuses.append(r.status_code)
                if r.status_code in (200, 201):
                    self.accepted[index] = r.json()["id"]
                    return
                if r.status_code == 503:
                    self.unavailable.append(r)
                else:
                    self.wrong.append((r.status_code, r.text[:300]))
            time.sleep(min(float(r.headers.get("retry-after", "1")), 0.5) if r.status_code == 503 else 0.2)
        with self.lock:
            self.wrong.append((0, f"submit {index} never accepted in 90 s"))


@pytest.mark.timeout(400)
def test_submits_through_a_postgres_restart(pg_stack: Stack, cluster: Cluster) -> None:
    submitter = Submitter(pg_stack)
    threads = [threading.Thread(target=submitter.run, daemon=True) for _ in range(THREADS)]
    for t in threads:
        t.start()
    pg_stack.wait(lambda: len(submitter.accepted) >= SUBMITS // 4, 60, "a quarter of the submits")
    cluster.stop()
    down_since = time.monotonic()
    pg_stack.wait(lambda: len(submitter.unavailable) >= THREADS, 30, "submits refused while PostgreSQL is down")
    time.sleep(max(0.0, DOWN_S - (time.monotonic() - down_since)))  # stays down a while, as a restart does
    cluster.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)

    assert submitter.wrong == []
    assert len(submitter.accepted) == SUBMITS
    assert len(set(submitter.accepted.values())) == SUBMITS  # a retried key never made a second job
    assert not [s for s in submitter.statuses if s >= 500 and s != 503]
    for r in submitter.unavailable:
        assert r.headers["content-type"].startswith("application/problem+json")
        assert int(r.headers["retry-after"]) > 0
        assert r.json()["code"] == "database_unavailable"

    # Every accepted job completes; none is left running or pending once the database is back.
    ids = set(submitter.accepted.values())

    seen: dict[str, int] = {}

    def all_done() -> bool:
        seen.clear()
        cursor = None
        while True:
            page = httpx.get(f"{pg_stack.url}/jobs", headers=bearer(pg_stack.token), timeout=10,
                             params={"limit": 500, **({"cursor": cursor} if cursor else {})}).json()
            for j in page["items"]:
                if j["id"] in ids:
                    seen[j["status"]] = seen.get(j["status"], 0) + 1
            cursor = page["next_cursor"]
            if not cursor:
                return seen.get("succeeded") == len(ids)

    pg_stack.wait(all_done, 120, f"every accepted job to succeed after the restart (seen: {seen})")
    stuck = [j for j in pg_stack.api("GET", "/jobs", params={"limit": 500, "status": ["running", "pending",
                                                                                       "dispatched"]})["items"]]
    assert stuck == []
    # Each part says in one line that the database is away, and retries: before, the dispatcher
    # logged a 60-line traceback for every failed pass, several a second.
    for part in ("dispatcher", "api"):
        text = (pg_stack.logs / f"{part}.log").read_text()
        assert "Traceback" not in text, text[-3000:]
    assert "the database is unavailable" in (pg_stack.logs / "dispatcher.log").read_text()
