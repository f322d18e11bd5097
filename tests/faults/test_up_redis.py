"""The Redis that `gpulab up` brings: it asks for a password that only the service's account
reads (members' command jobs run on the same machine and could otherwise use the broker), and
when it dies (kill -9) up starts it again, so jobs run on without a person starting anything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
