"""The Redis that `gpulab up` brings: it asks for a password that only the service's account
reads (members' command jobs run on the same machine and could otherwise use the broker), and
when it dies (kill -9) up starts it again, so jobs run on without a person starting anything."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis

from tests.support.stack import assert_api_stopped, free_port


def _children(pid: int, name: str) -> list[int]:
    """The live processes named `name` whose parent is `pid` (a zombie is dead)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if int(rest[1]) == pid and comm == name and rest[0] != "Z":
            found.append(int(entry.name))
    return found


def _wait(condition, timeout: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def test_up_starts_its_redis_again_when_it_dies(tmp_path: Path) -> None:
    api_port, redis_port = free_port(), free_port()
    env = {**os.environ, "GPULAB_STATE_DIR": str(tmp_path / "state"),
           "GPULAB_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "GPULAB_CREDENTIALS_FILE": str(tmp_path / "token"), "GPULAB_API_URL": f"http://127.0.0.1:{api_port}",
           "GPULAB_HEARTBEAT_S": "0.5", "GPULAB_WORKER_TIMEOUT_S": "3", "GPULAB_DISPATCHER_TICK_S": "0.5",
           "GPULAB_PROBE_S": "1", "GPULAB_PROBE_TIMEOUT_S": "4", "PYTHONUNBUFFERED": "1"}
    for key in ("GPULAB_DATABASE_URL", "GPULAB_TOKEN"):
        env.pop(key, None)
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        # This shell's CLI looks at the default port: up's greeting says how to reach its own.
        up_env = {k: v for k, v in env.items() if k != "GPULAB_API_URL"}
        up = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--port", str(api_port)], env=up_env,
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def submit(message: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", "submit", "test-echo", "-p", f"message={message}"],
                              env=env, capture_output=True, text=True, timeout=180)

    try:
        _wait(lambda: "gpulab is up" in log.read_text(), 120, "gpulab is up", log)
        assert f"try: export GPULAB_API_URL=http://127.0.0.1:{api_port} ; gpulab submit" in log.read_text()
        [first] = _children(up.pid, "redis-server")
        # Another account on this machine reaches the port, but not the broker behind it.
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=redis_port, socket_connect_timeout=2).ping()
        password = tmp_path / "state" / "redis" / "password"
        assert oct(password.stat().st_mode)[-3:] == "600"
        secret = password.read_text().strip()
        assert len(secret) >= 32
        for pid in [first, *_children(up.pid, "python"), *_children(up.pid, "python3")]:
            assert secret not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        assert secret not in log.read_text()
        os.kill(first, signal.SIGKILL)
        _wait(lambda: bool(_children(up.pid, "redis-server")), 30, "up to start its Redis again", log)
        assert "redis exited with -9" in log.read_text()
        r = submit("after")
        assert r.returncode == 0, r.stderr + log.read_text()[-4000:]
        assert json.loads(r.stdout)["message"] == "after"
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=60)
    assert up.returncode == 0
    assert _children(up.pid, "redis-server") == []
    assert_api_stopped(api_port)


DEFAULT_PORT = 6379  # GPULAB_REDIS_URL's default


@pytest.fixture
def open_default_redis(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A Redis without a password at the default URL, as on many lab machines: the one already
    there (only pinged, never written), else one of this test's own."""
    from cli.local_redis import find_redis_server, redis_state
    from tests.support.services import unavailable

    state = redis_state(f"redis://127.0.0.1:{DEFAULT_PORT}/0")
    if state == "open":
        yield
        return
    binary = find_redis_server()
    if state != "none" or binary is None:
        unavailable(f"an open Redis on port {DEFAULT_PORT} ({state}, redis-server {binary})")
    proc = subprocess.Popen([binary, "--port", str(DEFAULT_PORT), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while redis_state(f"redis://127.0.0.1:{DEFAULT_PORT}/0") != "open":
        assert proc.poll() is None and time.monotonic() < deadline, "could not start an open Redis on 6379"
        time.sleep(0.1)
    yield
    proc.terminate()
    proc.wait(timeout=10)


def _up(tmp_path: Path, env: dict[str, str], api_port: int, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--port", str(api_port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_up_never_hands_its_parts_a_redis_that_asks_no_password(tmp_path: Path, open_default_redis: None) -> None:
    """GPULAB_REDIS_URL unset, an open Redis at the default URL: up starts its own, with a
    password, on another port; its parts, the admin commands and a second up all use that one."""
    api_port = free_port()
    env = {**os.environ, "GPULAB_STATE_DIR": str(tmp_path / "state"),
           "GPULAB_CREDENTIALS_FILE": str(tmp_path / "token"), "GPULAB_API_URL": f"http://127.0.0.1:{api_port}",
           "GPULAB_HEARTBEAT_S": "0.5", "GPULAB_WORKER_TIMEOUT_S": "3", "PYTHONUNBUFFERED": "1"}
    for key in ("GPULAB_REDIS_URL", "GPULAB_DATABASE_URL", "GPULAB_TOKEN"):
        env.pop(key, None)
    first, log = _up(tmp_path, env, api_port, "up")
    second = None
    try:
        _wait(lambda: "gpulab is up" in log.read_text(), 120, "gpulab is up", log)
        text = log.read_text()
        said = [line for line in text.splitlines() if "asks no password" in line]
        assert len(said) == 1 and "starting gpulab's own on port" in said[0], text
        redis_dir = tmp_path / "state" / "redis"
        assert oct(redis_dir.stat().st_mode)[-3:] == "700"
        recorded = redis_dir / "url"
        assert oct(recorded.stat().st_mode)[-3:] == "600"
        url = recorded.read_text().strip()
        parsed = urlparse(url)
        assert parsed.port != DEFAULT_PORT and parsed.password == (redis_dir / "password").read_text().strip()
        assert parsed.password not in text
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=parsed.port, socket_connect_timeout=2).ping()
        [own] = _children(first.pid, "redis-server")
        parts = _children(first.pid, "python") + _children(first.pid, "python3")
        assert len(parts) >= 3  # the API, the dispatcher, a worker
        assert {_environ(pid).get("GPULAB_REDIS_URL") for pid in parts} == {url}
        # The admin commands of this account find the same Redis, without being told.
        config = subprocess.run([sys.executable, "-m", "cli.main", "config"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert config.returncode == 0, config.stderr
        shown = json.loads(config.stdout)["redis_url"]
        assert shown == url.replace(parsed.password, "***"), shown
        # up itself dies (kill -9) with its parts; its Redis lives on. The next up uses it.
        for pid in [first.pid, *parts]:
            os.kill(pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert_api_stopped(api_port)
        second, log2 = _up(tmp_path, env, api_port, "up2")
        _wait(lambda: "gpulab is up" in log2.read_text(), 120, "the second gpulab up", log2)
        assert _children(second.pid, "redis-server") == [], log2.read_text()
        assert "gpulab's own" not in log2.read_text() and Path(f"/proc/{own}").exists()
        assert recorded.read_text().strip() == url
        r = subprocess.run([sys.executable, "-m", "cli.main", "submit", "test-echo", "-p", "message=own"],
                           env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr + log2.read_text()[-4000:]
        assert json.loads(r.stdout)["message"] == "own"
    finally:
        for proc in (second, first):
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        if second is not None:
            second.wait(timeout=60)
        # The first up's Redis outlived it, in its process group.
        deadline = time.monotonic() + 10
        while _group(first.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    assert_api_stopped(api_port)


def _group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_up_says_when_the_redis_the_admin_named_asks_no_password(tmp_path: Path) -> None:
    from tests.support.services import redis_url

    url = redis_url(13)
    env = {**os.environ, "GPULAB_STATE_DIR": str(tmp_path / "state"), "GPULAB_REDIS_URL": url,
           "GPULAB_CREDENTIALS_FILE": str(tmp_path / "token"), "PYTHONUNBUFFERED": "1"}
    env.pop("GPULAB_DATABASE_URL", None)
    up, log = _up(tmp_path, env, free_port(), "up")
    try:
        _wait(lambda: "asks no password" in log.read_text(), 60, "up's word on the Redis", log)
        [line] = [line for line in log.read_text().splitlines() if "asks no password" in line]
        assert f"GPULAB_REDIS_URL={url}" in line and "members' command jobs" in line and "requirepass" in line
        assert not (tmp_path / "state" / "redis" / "url").exists()
        assert _children(up.pid, "redis-server") == []
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=60)
