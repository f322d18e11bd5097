"""A real gpulab stack for end-to-end tests: the `gpulab` commands as processes.

The API, the dispatcher and the workers run as separate processes against a real
database and a fresh Redis database number, exactly as `gpulab up` would start them.
Tests poll for states; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.cli import run_in_process

FINAL = ("succeeded", "failed", "cancelled")
# Commands that open the database themselves or serve: in the tests' process they would leave
# engines and global state behind, so they always run as processes.
PROCESS_COMMANDS = frozenset({"users", "migrate", "up", "api", "dispatcher", "worker", "workers", "run", "config"})
STOP_WAIT_S = 15.0  # a stopped part still running after this is killed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_api_stopped(port: int) -> None:
    """Nothing answers on the API's port any more (gpulab up stopped all it started)."""
    with httpx.Client() as client:
        try:
            client.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except httpx.TransportError:
            return
    raise AssertionError(f"the API on port {port} still answers after gpulab up stopped")


class Stack:
    def __init__(self, *, database_url: str, redis_url: str, state_dir: Path, env: dict[str, str] | None = None):
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "GPULAB_DATABASE_URL": database_url,
            "GPULAB_REDIS_URL": redis_url,
            "GPULAB_STATE_DIR": str(state_dir),
            "GPULAB_HOST": "testhost",
            "GPULAB_HEARTBEAT_S": "0.5",
            "GPULAB_WORKER_TIMEOUT_S": "3",
            "GPULAB_DISPATCHER_TICK_S": "0.5",
            "GPULAB_LEASE_S": "5",
            "GPULAB_CANCEL_GRACE_S": "1",
            "GPULAB_EVENT_FLUSH_S": "0.1",
            "GPULAB_TORCH_THREADS": "1",
            "GPULAB_API_URL": self.url,
            "GPULAB_CREDENTIALS_FILE": str(state_dir / "token"),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token = ""
        self.http: httpx.Client | None = None
        self._starting: list[str] = []  # device ids of the workers launch() started

    # -- processes ------------------------------------------------------------------------

    def gpulab(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
               timeout: float = 120, process: bool = False) -> subprocess.CompletedProcess[str]:
        """Run one `gpulab` command to completion: a command of the API's clients in this process
        (tests/support/cli.py), one that opens the database itself or serves (`users`, `migrate`,
        `up`...) or any with `process` as a process of its own."""
        if not process and args and args[0] not in PROCESS_COMMANDS:
            result = run_in_process(args, {**self.env, **(env or {})})
        else:
            result = subprocess.run([sys.executable, "-m", "cli.main", *args], env={**self.env, **(env or {})},
                                    capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"gpulab {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name.replace('/', '_')}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args],
                                    env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def start(self, workers: tuple[str, ...] = ("cpu",), slots: int = 1) -> Stack:
        return self.launch(workers, slots).wait_started()

    def launch(self, workers: tuple[str, ...] = ("cpu",), slots: int = 1) -> Stack:
        """Migrate, add the admin, then start the API, the dispatcher and the workers all at once
        (wait_started waits for them: stacks launched together start side by side)."""
        finish_stopping(block=False)
        self._migrate_and_add_admin()
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        self.spawn("api", "api", "--port", str(self.port))
        self.spawn("dispatcher", "dispatcher")
        self._starting = [self.spawn_worker(device, slots=slots) for device in workers]
        return self

    def wait_started(self) -> Stack:
        self.wait(lambda: self._ready(), 60, "the API to become ready")
        for device_id in self._starting:
            self.wait_online(device_id)
        return self

    def _migrate_and_add_admin(self) -> None:
        """What `gpulab migrate` and `gpulab users add admin --admin` do, in this process: each
        command would cost a Python start (2-10 s on a busy 2-core machine) at every stack's start,
        and both commands have tests of their own (tests/faults/test_migrate.py,
        tests/service/test_settings.py, tests/cli; start_up below still runs them)."""
        from migrations.migrate import upgrade
        from service.db import Database
        from service.settings import Settings
        from service.store.users import create_user

        upgrade(self.env["GPULAB_DATABASE_URL"])
        db = Database.from_settings(Settings(database_url=self.env["GPULAB_DATABASE_URL"],
                                             state_dir=self.state_dir))
        try:
            with db.writing() as session:
                _, self.token = create_user(session=session, name="admin", is_admin=True)
        finally:
            db.engine.dispose()

    def start_up(self, device: str = "cpu") -> Stack:
        """Start the stack as `gpulab up` does: one supervisor that restarts a part that exits."""
        finish_stopping(block=False)
        self.gpulab("migrate")
        self.token = self.gpulab("users", "add", "admin", "--admin").stdout.strip()
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        self.spawn("up", "up", "--port", str(self.port))
        self.wait(lambda: self._device_online(f"testhost/{device}"), 90, f"testhost/{device} to come online")
        return self

    @property
    def installation(self) -> str:
        """This stack's installation id (its Redis queues and channels carry it)."""
        from service.db import Database
        from service.live import read_installation
        from service.settings import Settings

        db = Database.from_settings(Settings(database_url=self.env["GPULAB_DATABASE_URL"],
                                             state_dir=self.state_dir))
        try:
            with db.reading() as session:
                return read_installation(session)
        finally:
            db.engine.dispose()

    def add_worker(self, device: str = "cpu", host: str = "testhost", slots: int = 1,
                   env: dict[str, str] | None = None) -> str:
        """Start a worker and wait until its device is online; returns the device id."""
        device_id = self.spawn_worker(device, host=host, slots=slots, env=env)
        self.wait_online(device_id)
        return device_id

    def wait_online(self, device_id: str) -> None:
        self.wait(lambda: self._device_online(device_id), 60, f"{device_id} to come online")

    def spawn_worker(self, device: str = "cpu", host: str = "testhost", slots: int = 1,
                     env: dict[str, str] | None = None) -> str:
        """Start a worker without waiting for it; returns the device id."""
        device_id = f"{host}/{device}"
        self.spawn(f"worker-{device_id}", "worker", "--device", device, "--host-name", host,
                   "--slots", str(slots), env=env)
        return device_id

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a part and its children (a worker's pool too)."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop(self, after: Callable[[], None] | None = None) -> None:
        """Send every part SIGTERM and return; `after` (dropping the database, removing a folder)
        runs once they have exited. A worker's warm shutdown takes 5-7 s on a busy 2-core machine:
        the next module's stack starts meanwhile instead of each teardown waiting it out."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        if self.http:
            self.http.close()
        _stopping.append((self, time.monotonic() + STOP_WAIT_S, after))

    # -- API helpers ----------------------------------------------------------------------

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _device_online(self, device_id: str) -> bool:
        if not self._ready():
            return False
        devices = self.api("GET", "/devices")
        return any(d["id"] == device_id and d["state"] == "online" for d in devices)

    def api(self, method: str, path: str, *, token: str | None = None, expect: int | None = None,
            **kw: Any) -> Any:
        assert self.http is not None
        headers = kw.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = self.http.request(method, path, headers=headers, **kw)
        if expect is not None:
            assert response.status_code == expect, (response.status_code, response.text)
        elif response.status_code >= 400:
            raise AssertionError(f"{method} {path} → {response.status_code}: {response.text}")
        return response.json() if response.headers.get("content-type", "").endswith("json") else response

    def submit(self, kind: str, params: dict[str, Any] | None = None, *, token: str | None = None,
               **fields: Any) -> dict[str, Any]:
        body = {"kind": kind, "params": params or {}, **fields}
        return self.api("POST", "/jobs", json=body, token=token, expect=201)

    def job(self, job_id: int) -> dict[str, Any]:
        return self.api("GET", f"/jobs/{job_id}")

    def wait_for(self, job_id: int, statuses: tuple[str, ...] = FINAL, timeout: float = 60) -> dict[str, Any]:
        """Poll a job until its status is one of `statuses`; returns it."""
        seen: dict[str, Any] = {}

        def check() -> bool:
            seen.update(self.job(job_id))
            return seen["status"] in statuses

        self.wait(check, timeout, f"job {job_id} to reach {statuses} (last: {seen.get('status')})")
        return seen

    def wait(self, condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.logs.glob("*.log"))
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tails}")


# Stacks told to stop: (stack, when to kill what still runs, what to do once all have exited).
_stopping: list[tuple[Stack, float, Callable[[], None] | None]] = []


def finish_stopping(*, block: bool) -> None:
    """Reap the parts of stopped stacks and run their `after`: all of them (block), or only the
    stacks whose parts have exited or outstayed STOP_WAIT_S (those are killed)."""
    for entry in list(_stopping):
        stack, kill_at, after = entry
        if not block and time.monotonic() < kill_at and any(p.poll() is None for p in stack.procs.values()):
            continue
        _stopping.remove(entry)
        for proc in stack.procs.values():
            try:
                proc.wait(timeout=max(0.0, kill_at - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        stack.procs.clear()
        if after:
            after()
