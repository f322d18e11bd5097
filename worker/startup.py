"""What a worker's start sweeps up after an earlier worker of its device that died: the
processes its commands left, run folders and old cached environments, and the messages it
took and never acknowledged."""

from __future__ import annotations

import contextlib
import logging

import redis
from sqlalchemy.exc import SQLAlchemyError

from service.db import Database
from service.queues import restore_unacked
from service.settings import Settings
from worker.command_files import remove_stale_run_folders
from worker.command_sweep import end_orphans_of_device
from worker.command_venv import prune_venvs

log = logging.getLogger("gpulab.worker")


def sweep_at_start(settings: Settings, db: Database, *, device_id: str, queue: str) -> None:
    """Clear what a dead predecessor left; a part that is down now is cleared at the next start."""
    if (orphans := end_orphans_of_device(queue)):
        log.warning("ended %d process(es) an earlier worker of %s left running", orphans, device_id)
    with contextlib.suppress(SQLAlchemyError):  # the database down: the next start removes them
        if (stale := remove_stale_run_folders(settings, db)):
            log.warning("removed %d run folder(s) of jobs that no longer run (their worker died)", stale)
    if (pruned := prune_venvs(settings)):
        log.info("removed %d cached requirements environment(s) no job used for a long time", pruned)
    with contextlib.suppress(redis.RedisError):  # Redis down: the messages wait for its return
        if (restored := restore_unacked(settings.redis_url, queue)):
            log.warning("%d message(s) that an earlier worker of %s took and never acked went back "
                        "to its queue", restored, device_id)
