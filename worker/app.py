"""The worker process: a Celery prefork worker on one device's queue, and its signals.

`gpulab worker --device D` calls `serve()`. The parent pins the device, imports torch once
(children inherit it, warm) but never touches CUDA; each child opens its own database
connections and CUDA context, and keeps them between jobs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery, signals
from celery.exceptions import SecurityWarning
from celery.worker import state as celery_state

from service.db import Database
from service.heap import freeze_start_up
from service.live import Publisher, read_installation, use_installation
from service.queues import PROBE, RUN_JOB, device_queue, make_celery
from service.settings import Settings
from service.store.devices import live_worker, register_worker, stop_worker
from worker.command_account import announce as announce_command_account
from worker.device import DeviceError, DeviceInfo, pin_process, resolve_device, runtime_facts
from worker.heartbeat import Watch, is_child_alive
from worker.probe import Probe
from worker.request import JobRequest
from worker.runner import JobRunner
from worker.sampler import SampleRecorder, make_sampler
from worker.startup import sweep_at_start

log = logging.getLogger("gpulab.worker")

LEAVE_GRACE_S = 30.0
EXIT_NOT_CONSUMING = 75  # EX_TEMPFAIL: restart me


@dataclass
class WorkerState:
    settings: Settings
    device: DeviceInfo
    slots: int
    worker_id: str
    db: Database
    publisher: Publisher
    watch: Watch | None = None
    consumer: Any = None
    probe: Probe | None = None
    leaving: bool = False


_state: WorkerState | None = None


def _current() -> WorkerState:
    if _state is None:
        raise RuntimeError("the gpulab worker was not started with worker.app.serve()")
    return _state


def build_app(settings: Settings) -> Celery:
    """The worker's Celery app, with gpulab's one task registered."""
    app = make_celery(settings)

    @app.task(name=RUN_JOB, bind=True, acks_late=True, Request=JobRequest)
    def run_job(self: Any, job_id: int, attempt: int) -> None:
        state = _current()
        runner = JobRunner(settings=state.settings, db=state.db, device=state.device,
                           worker_id=state.worker_id, celery=self.app, publisher=state.publisher)
        outcome = runner.run(int(job_id), int(attempt))
        if outcome is not None and outcome.poisoned:
            # A CUDA fault poisons the context: this child must not run another job. The job's
            # end state is committed, so a redelivered message would claim nothing.
            log.error("job %s left the CUDA context faulted: replacing this child", job_id)
            os._exit(70)

    @app.task(name=PROBE, acks_late=False)
    def probe(worker_id: str) -> None:
        """Nothing to do: its arrival, noted by the parent, was the point."""

    return app


def handed_out() -> dict[int, tuple[int, int]]:
    """pid -> (job, attempt) of each job a child accepted, as this parent handed them out."""
    for _ in range(5):
        try:
            requests = list(celery_state.active_requests)
            break
        except RuntimeError:  # the set changed while it was copied (the consumer thread)
            continue
    else:
        return {}
    out: dict[int, tuple[int, int]] = {}
    for request in requests:
        if request.name == RUN_JOB and request.worker_pid:
            job_id, attempt = request.args[:2]
            out[int(request.worker_pid)] = (int(job_id), int(attempt))
    return out


def _busy(slots: int) -> bool:
    # Received and not yet done (running or waiting for a child): with prefetch 1, a worker
    # holding `slots` of them fetches nothing more, probes included.
    return len(celery_state.reserved_requests) >= slots


@signals.task_received.connect
def _received(**_: Any) -> None:
    # In the parent's consumer: any message from our own queue proves it consumes.
    if _state is not None and _state.probe is not None:
        _state.probe.received()


def _leave(why: str) -> None:
    """Stop taking jobs and exit, to be restarted by `gpulab up` or the container's policy."""
    state = _current()
    if state.leaving:
        return
    state.leaving = True
    log.error("worker %s leaves: %s", state.worker_id, why)
    # A warm shutdown: running jobs finish and record their end first.
    os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=_exit_when_idle, name="gpulab-leave", daemon=True).start()


def _exit_when_idle() -> None:
    # A consumer wedged in kombu may never act on the warm shutdown: once no job runs here
    # (or after the grace), leave without it.
    deadline = time.monotonic() + LEAVE_GRACE_S
    while time.monotonic() < deadline or handed_out():
        time.sleep(1.0)
    log.error("the warm shutdown did not end within %s s: exiting now", LEAVE_GRACE_S)
    with contextlib.suppress(Exception):  # best effort: the reaper marks it offline otherwise
        _shutdown()
    for pid in _children(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os._exit(EXIT_NOT_CONSUMING)


def _children(parent: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != parent and is_child_alive(int(entry), parent):
            pids.append(int(entry))
    return pids


# The parent's engines and Redis pools, kept referenced in each child so they are never
# garbage-collected there (closing them would close the parent's connections).
_inherited: list[Any] = []


@signals.worker_process_init.connect
def _child_init(**_: Any) -> None:
    state = _current()
    # A child is forked while the parent's heartbeat thread may hold a pool's lock: it must
    # not touch the inherited engine or Redis pool at all, only build its own.
    _inherited.append((state.db, state.publisher))
    state.db = Database.from_settings(state.settings)
    state.publisher = Publisher(state.settings.redis_url)
    state.publisher.attach(state.db.read, state.db.write)
    if state.settings.torch_threads:
        import torch

        torch.set_num_threads(state.settings.torch_threads)
    # What the parent left unfrozen (Celery's pool, built after its freeze) and this child's own
    # connections: a GPU job's end collects, and then walks only what the jobs made.
    freeze_start_up()


@signals.worker_ready.connect
def _ready(sender: Any = None, **_: Any) -> None:
    state = _current()
    state.consumer = sender
    with state.db.writing() as session:
        register_worker(session=session, worker_id=state.worker_id, device=state.device.as_dict(),
                        pid=os.getpid(), slots=state.slots)
    queue = device_queue(state.device.id)

    def on_health(healthy: bool) -> None:
        if state.probe:
            state.probe.paused = not healthy
        if healthy:
            sender.add_task_queue(queue)
        else:
            sender.cancel_task_queue(queue)

    def send_probe() -> None:
        sender.app.send_task(PROBE, args=[state.worker_id], queue=queue, retry=False)

    state.probe = Probe(send=send_probe, busy=lambda: _busy(state.slots),
                        period_s=state.settings.probe_s, timeout_s=state.settings.probe_timeout_s)

    def our_job(pid: int) -> int | None:
        return state.watch.pid_jobs.get(pid) if state.watch else None

    read = make_sampler(state.device, state.settings.nvidia_visible_devices, our_job)
    recorder = SampleRecorder(db=state.db, settings=state.settings, device_id=state.device.id, read=read)
    state.watch = Watch(settings=state.settings, db=state.db, worker_id=state.worker_id,
                        on_health=on_health, on_lost=lambda: _leave("declared lost"),
                        sample=recorder, requests=handed_out, probe=state.probe)
    state.watch.start()
    state.probe.run(state.watch.stop, lambda: _leave("its consumer receives nothing from its queue"))
    log.info("worker %s serving %s (%s) on queue %s with %d slot(s)", state.worker_id,
             state.device.id, state.device.name, queue, state.slots)


@signals.worker_shutdown.connect
def _shutdown(**_: Any) -> None:
    state = _current()
    if state.watch:
        state.watch.stop.set()
    try:
        with state.db.writing() as session:
            stop_worker(session=session, worker_id=state.worker_id)
    except Exception as exc:
        log.warning("could not record the worker's stop: %s", exc)


class _QuietProbes(logging.Filter):
    """Celery logs every task it receives and ends; a probe every few seconds is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return PROBE not in record.getMessage()


def serve(settings: Settings, *, device: str, slots: int = 1, preload_torch: bool = True,
          loglevel: str = "INFO") -> None:
    """Run a worker for `device` until it is stopped (blocks)."""
    global _state
    info = resolve_device(device, settings.host, settings.nvidia_visible_devices)
    pin_process(info)
    announce_command_account(settings)
    if preload_torch:
        # Children inherit the imported module: a job never pays torch's import.
        import torch  # noqa: F401
    # Reported at start (log, then the device's row): versions a result depends on.
    info.runtime = runtime_facts(info)
    log.info("runtime of %s: %s", info.id, ", ".join(f"{k} {v}" for k, v in info.runtime.items() if v is not None))
    db = Database.from_settings(settings, pooled=False)
    publisher = Publisher(settings.redis_url)
    publisher.attach(db.read, db.write)
    _state = WorkerState(settings=settings, device=info, slots=slots,
                         worker_id=f"{info.host}-{uuid.uuid4().hex[:12]}", db=db, publisher=publisher)
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).addFilter(_QuietProbes())
    refuse_a_second_worker(settings, db, info.id, info.host)
    queue = device_queue(info.id)
    sweep_at_start(settings, db, device_id=info.id, queue=queue)
    app = build_app(settings)
    # gpulab's workers run as root by design, to start members' commands as their own accounts (the
    # README's "For admins"); Celery's "absolutely not recommended" would tell an admin the opposite.
    warnings.filterwarnings("ignore", message="You're running the worker with superuser", category=SecurityWarning)
    freeze_start_up()  # torch and the rest, before the children are forked: they inherit it frozen
    app.worker_main([
        "worker", "-Q", queue, "-c", str(slots), "-P", "prefork",
        # Mingle and gossip sync worker state that gpulab keeps in its database; they only slow
        # a start. The event heartbeat goes with task events (Flower shows workers from it).
        "--without-mingle", "--without-gossip", *([] if settings.celery_events else ["--without-heartbeat"]),
        "-n", f"gpulab-{info.id.replace('/', '-')}@{info.host}", "-l", loglevel,
    ])


def refuse_a_second_worker(settings: Settings, db: Database, device_id: str, host: str) -> None:
    """Raise DeviceError when a live worker process on this host serves the device already.

    A second one (an admin's `gpulab workers` typed to list them) took the device's row, and
    its clean stop marked the device offline while the first still served it: nothing started.
    """
    with db.reading() as session:
        other = live_worker(session=session, device_id=device_id, host=host, timeout_s=settings.worker_timeout_s)
    if other is None or other.pid == os.getpid():
        return
    try:  # the process must still be a gpulab worker: a crashed one's pid is gone, or another's now
        cmdline = Path(f"/proc/{other.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return
    if "worker" in cmdline:
        raise DeviceError(f"{device_id} is served already by worker {other.id} (pid {other.pid}): stop it "
                          "first (the dashboard's Workers page lists workers; `gpulab worker` starts one)")


def __getattr__(name: str) -> Any:
    """`celery -A worker.app inspect ping|active|stats` (and Flower) find an app here, built on
    first use from the settings, so importing this module reads no settings."""
    if name in ("app", "celery"):
        return _admin_app()
    raise AttributeError(name)


@functools.cache
def _admin_app() -> Celery:
    from service.settings import get_settings

    settings = get_settings()
    # The installation names the control exchange the workers listen on: read it first.
    db = Database.from_settings(settings, pooled=False)
    try:
        with db.reading() as session:
            use_installation(read_installation(session))
    finally:
        db.engine.dispose()
    return build_app(settings)
