"""A Redis and a PostgreSQL of one test's own, which it may stop and start again.

Fault tests restart them; the shared servers other people use are never touched.
PostgreSQL refuses to run as root, so its cluster is made and run as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from tests.support.stack import free_port


def _missing(what: str) -> None:
    pytest.fail(f"{what} is not installed; the fault tests need it", pytrace=False)


class PrivateRedis:
    """A redis-server on a free port that keeps nothing across a restart."""

    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server") or _missing("redis-server")
        assert binary
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--logfile", str(self.dir / "redis.log")])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):  # not listening yet
                if redis.Redis.from_url(self.url, socket_connect_timeout=1).ping():
                    return self
            time.sleep(0.1)
        raise AssertionError("the private redis-server did not answer")

    def stop(self) -> None:
        """`shutdown nosave`: whatever Redis held is gone."""
        if self.proc is None:
            return
        with contextlib.suppress(redis.ConnectionError):  # it answers by closing the connection
            redis.Redis.from_url(self.url).shutdown(nosave=True)
        self.proc.wait(15)
        self.proc = None


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary folder, on a free port, run as `postgres`."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            _missing("PostgreSQL (pg_ctl)")
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gpulab-pg-"))
        self.data = self.dir / "data"
        shutil.chown(self.dir, "postgres", "postgres")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/gpulab"
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                          "--no-sync")

    def _as_postgres(self, *argv: str) -> None:
        # As root, run it as the postgres user (PostgreSQL refuses root); else as we are.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed: {result.stderr or result.stdout}")

    def start(self) -> PrivatePostgres:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"),
                          "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                          "-w", "start")
        return self

    def stop(self) -> None:
        """Stop at once: open connections are cut, as in a crash or a failover."""
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self) -> str:
        import psycopg

        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "gpulab"')
        return self.url

    def remove(self) -> None:
        with contextlib.suppress(AssertionError):  # already stopped
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
