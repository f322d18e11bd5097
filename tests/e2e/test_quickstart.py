"""`gpulab up` on a machine with no Redis running: it brings one, and a member can run a job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.stack import assert_api_stopped, free_port


def test_up_starts_everything_and_stops_cleanly(tmp_path: Path) -> None:
    api_port, redis_port = free_port(), free_port()
    env = {**os.environ, "GPULAB_STATE_DIR": str(tmp_path / "state"),
           "GPULAB_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "GPULAB_CREDENTIALS_FILE": str(tmp_path / "token"), "GPULAB_API_URL": f"http://127.0.0.1:{api_port}",
           "GPULAB_HEARTBEAT_S": "0.5", "GPULAB_WORKER_TIMEOUT_S": "3", "PYTHONUNBUFFERED": "1"}
    for key in ("GPULAB_DATABASE_URL", "GPULAB_TOKEN"):
        env.pop(key, None)
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--port", str(api_port),
                               # Past this, up says what it still waits for, and keeps waiting.
                               "--ready-timeout", "1"], env=env,
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "gpulab is up" not in log.read_text() and time.monotonic() < deadline:
            assert up.poll() is None, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert "gpulab is up" in text, text
        assert text.index("gpulab is not up after 1 s: ") < text.index("gpulab is up"), text
        assert "starting one in" in text  # no Redis answered: it brought its own
        assert (tmp_path / "state" / "redis" / "appendonlydir").exists() or \
            (tmp_path / "state" / "redis" / "appendonly.aof").exists()
        token = (tmp_path / "token").read_text().strip()
        assert token in text and oct((tmp_path / "token").stat().st_mode)[-3:] == "600"
        # "Up" means a submit works at once: the CPU worker has registered its device.
        ready = httpx.get(f"http://127.0.0.1:{api_port}/readyz").json()
        assert [d.endswith("/cpu") for d in ready["devices_online"]] == [True], ready
        r = subprocess.run([sys.executable, "-m", "cli.main", "submit", "test-echo", "-p", "message=up"],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["message"] == "up"
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=60)
    assert up.returncode == 0
    # Everything it started is gone: the port of its Redis is free again.
    assert_api_stopped(api_port)
