"""Commands that supervise several of gpulab's parts: `up` (everything on this machine) and
`workers` (one worker per device of a host), each part started again when it exits."""

from __future__ import annotations

import getpass
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import typer

from cli.client import save_token
from cli.serve import console
from service.settings import get_settings

if TYPE_CHECKING:
    from service.db import Database


RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
STEADY_S = 60.0  # a part that ran this long starts again after the first delay


@dataclass
class Part:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None  # None: this process's environment
    started_at: float = 0.0
    restart_at: float | None = None  # when an exited part starts again
    delay_s: float = RESTART_FIRST_S

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env)
        self.started_at = time.monotonic()
        self.restart_at = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()


def up(port: int = typer.Option(8000, help="the API's port"),
       host: str = typer.Option("127.0.0.1", help="the API's address (0.0.0.0 for the lab)"),
       cpu_worker: bool = typer.Option(False, help="also run a CPU worker when GPUs are seen"),
       ready_timeout: float = typer.Option(180.0, help="seconds to wait for the API and every worker")) -> None:
    """Start everything on this machine: a Redis of its own (unless GPULAB_REDIS_URL names one), the API, the
    dispatcher, workers."""
    # Here, not at the top: every `gpulab` command imports this module, and a member's
    # `gpulab jobs` needs neither the database layer nor a Redis client.
    from cli.local_redis import local_redis_argv, plan_broker, start_local_redis
    from migrations.migrate import upgrade
    from service.db import Database
    from service.store.users import count_users, create_user
    from worker.device import count_gpus

    settings = get_settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    # The Redis up brings is one of its parts: started again when it exits (its append-only
    # file keeps the queues), else every job would wait for a person to start it by hand. It
    # asks for a password, which the parts get in their environment (only this account reads it).
    redis_part = None
    redis_dir = settings.state_dir / "redis"
    try:
        broker = plan_broker(settings)
        if broker.note:
            console.print(f"[yellow]{broker.note}[/]" if broker.warn else broker.note, highlight=False)
        if broker.start:
            redis_part = Part("redis", local_redis_argv(broker.url, redis_dir),
                              proc=start_local_redis(broker.url, redis_dir), started_at=time.monotonic())
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    parts_env = {**os.environ, "GPULAB_REDIS_URL": broker.url}
    upgrade(settings.database_url)
    db = Database.from_settings(settings)
    with db.writing() as session:
        if count_users(session=session) == 0:
            name = re.sub(r"[^a-z0-9_.-]", "", getpass.getuser().lower()) or "admin"
            _, token = create_user(session=session, name=name, is_admin=True)
            path = save_token(settings, token)
            console.print(f"[bold]first admin {name!r} created[/]; token (shown once, saved to {path}):\n  {token}")
    db.engine.dispose()

    gpus = count_gpus()
    devices = [f"cuda:{i}" for i in range(gpus)] or ["cpu"]
    if gpus and cpu_worker:
        devices.append("cpu")
    me = [sys.executable, "-m", "cli.main"]
    parts = [Part("api", [*me, "api", "--host", host, "--port", str(port)], env=parts_env),
             Part("dispatcher", [*me, "dispatcher"], env=parts_env)]
    parts += [Part(f"worker {d}", [*me, "worker", "--device", d], env=parts_env) for d in devices]
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    workers = [p for p in parts if p.name.startswith("worker")]
    # "Up" means a submit succeeds now: the API answers and every worker started here has
    # registered its device (a submit before that is refused as an unknown device).
    db = Database.from_settings(settings)
    deadline = time.monotonic() + ready_timeout
    said = {"up": False, "late": False}

    def tick() -> None:
        if redis_part:
            _supervise(redis_part)
        announce()

    def announce() -> None:
        if said["up"]:
            return
        waiting = _not_ready(url, db, settings.host, workers)
        if not waiting:
            said["up"] = True
            # On another port than this shell's CLI looks at, the hint says how to reach it.
            where = "" if settings.api_url.rstrip("/") == url else f"export GPULAB_API_URL={url} ; "
            console.print(f"[green]gpulab is up[/] at {url} (API docs {url}/docs) with devices: "
                          f"{', '.join(devices)}\n  try: {where}gpulab submit regression -p steps=200"
                          f"{'' if 'cpu' in devices else ' --device gpu'}")
        elif not said["late"] and time.monotonic() > deadline:
            said["late"] = True
            console.print(f"[red]gpulab is not up after {ready_timeout:.0f} s: {waiting}[/]; see the "
                          f"output above, fix it and restart (Ctrl-C stops everything)")

    try:
        run_parts(parts, on_tick=tick, stop_wait_s=20, stopping="gpulab")
    finally:
        db.engine.dispose()
        # Last, after the workers' warm shutdown, which still talks to it.
        if redis_part and redis_part.proc:
            redis_part.stop()
            redis_part.proc.wait(timeout=10)


def workers(device: list[str] = typer.Option([], "--device", "-d",
                                         help="a device to serve (repeatable); default every GPU, else the CPU"),
            slots: int = typer.Option(1, min=1, max=64, help="jobs at once on each device"),
            host_name: str | None = typer.Option(None, help="host part of the device ids (default GPULAB_HOST)")
            ) -> None:
    """Run one worker per device of this host, and start each again if it exits (a host's container)."""
    from worker.device import count_gpus

    devices = device or [f"cuda:{i}" for i in range(count_gpus())] or ["cpu"]
    extra = ["--slots", str(slots)] + (["--host-name", host_name] if host_name else [])
    me = [sys.executable, "-m", "cli.main"]
    # Each process pins itself to its own card; the container sees every card, so a gang's
    # leader can hand all of its cards to the command it starts.
    parts = [Part(f"worker {d}", [*me, "worker", "--device", d, *extra]) for d in devices]
    console.print(f"workers for {', '.join(devices)}")
    run_parts(parts, stop_wait_s=50, stopping="the workers")


def run_parts(parts: list[Part], *, stop_wait_s: float, stopping: str,
              on_tick: Callable[[], None] = lambda: None) -> None:
    """Start the parts, start again any that exits, and stop them all on SIGTERM or Ctrl-C."""
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for part in parts:
        part.start()
    try:
        while not stop:
            for part in parts:
                if not stop:
                    _supervise(part)
            on_tick()
            time.sleep(0.5)
    finally:
        console.print(f"stopping {stopping}…")
        for part in parts:
            part.stop()
        deadline = time.monotonic() + stop_wait_s
        for part in parts:
            if part.proc:
                try:
                    part.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    part.proc.kill()


def _supervise(part: Part) -> None:
    """Schedule the start of a part that exited, and start it when its delay has passed."""
    now = time.monotonic()
    if part.restart_at is None and part.proc is not None and part.proc.poll() is not None:
        ran = now - part.started_at
        part.delay_s = RESTART_FIRST_S if ran >= STEADY_S else min(part.delay_s * 2, RESTART_MAX_S)
        part.restart_at = now + part.delay_s
        console.print(f"[yellow]{part.name} exited with {part.proc.returncode} after {ran:.0f} s; "
                      f"starting it again in {part.delay_s:.0f} s[/]")
    if part.restart_at is not None and now >= part.restart_at:
        part.start()


def _not_ready(url: str, db: Database, host: str, workers: list[Part]) -> str:
    """What still keeps gpulab from taking jobs ("" once nothing does)."""
    from sqlalchemy import select

    from service.models import Worker

    try:
        if httpx.get(f"{url}/readyz", timeout=2).status_code != 200:
            return f"the API at {url} is not ready (its database or Redis does not answer)"
    except httpx.HTTPError:
        return f"the API does not answer at {url}"
    pids = {p.proc.pid: p.name for p in workers if p.proc}
    try:
        with db.reading() as session:
            registered = set(session.scalars(select(Worker.pid).where(
                Worker.host == host, Worker.stopped_at.is_(None), Worker.pid.in_(list(pids)))))
    except Exception as exc:  # the database may be briefly locked by the parts starting up
        return f"cannot read the workers' registrations ({type(exc).__name__})"
    missing = [name for pid, name in pids.items() if pid not in registered]
    if len(pids) < len(workers):
        missing += [p.name for p in workers if not p.proc]
    return f"{', '.join(missing)} has not registered its device" if missing else ""
