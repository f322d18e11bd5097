"""A command's process: started as the member's account in a session and process group of its
own, its output pumped into a queue, and stopped in three steps when asked."""

from __future__ import annotations

import ctypes
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from jobs.command import Params
from worker.command_account import unreachable_program
from worker.command_prepare import CommandFailed, Prepared

READ_CHUNK = 65536


class Stopper:
    """SIGINT, then SIGTERM, then SIGKILL to a process group, spread over the cancel grace.

    The worker parent kills the whole child once the grace has passed, so the three steps end
    before it: SIGINT at once (a training loop's KeyboardInterrupt handler saves its
    checkpoint), SIGTERM at half the grace, SIGKILL at 80 %.
    """

    def __init__(self, pgid: int, grace_s: float):
        self.pgid = pgid
        self.steps = [(0.0, signal.SIGINT), (max(0.5, 0.5 * grace_s), signal.SIGTERM),
                      (max(1.0, 0.8 * grace_s), signal.SIGKILL)]
        self.began: float | None = None
        self.why = ""

    def begin(self, why: str) -> None:
        if self.began is None:
            self.began, self.why = time.monotonic(), why
            self.tick()

    def tick(self) -> None:
        if self.began is None:
            return
        while self.steps and time.monotonic() - self.began >= self.steps[0][0]:
            _, sig = self.steps.pop(0)
            signal_group(self.pgid, sig)


def signal_group(pgid: int, sig: int) -> None:
    """Signal every process of the group (it may have ended already)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return



_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the command's process, after the switch of user: SIGKILL it if the worker's child dies.

    A worker killed outright (the OOM killer, SIGKILL) cannot stop the group itself; the kernel
    then ends the command at least. (Set after the user switch, which would clear it.)
    """
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def not_runnable(program: str, prepared: Prepared, exc: OSError) -> str:
    """Why the account may not run the program, and what to do: usually an interpreter under /root."""
    found = shutil.which(program, path=prepared.env["PATH"])
    why = unreachable_program(prepared.account, Path(found)) if found else None
    if why is None:
        return f"cannot start {program!r}: {exc.strerror} (PATH={prepared.env['PATH']})"
    return f"cannot start {program!r} as {prepared.account.name}: {why}"


def start_command(params: Params, prepared: Prepared) -> subprocess.Popen[bytes]:
    account = prepared.account
    switch: dict[str, Any] = {}
    if account.switch:
        switch = {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}
    # The worker's child ignores SIGINT, and an ignored signal stays ignored across exec: the
    # command would never see the cancel's SIGINT (Python installs no KeyboardInterrupt handler
    # then). A handled signal is reset to the default at exec, so handle it while forking.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    try:
        return subprocess.Popen(params.argv, cwd=prepared.folder.work, env=prepared.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True, umask=0o077, preexec_fn=_die_with_parent, **switch)
    except PermissionError as exc:
        raise CommandFailed(not_runnable(params.argv[0], prepared, exc)) from None
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise CommandFailed(f"cannot start {params.argv[0]!r}: {exc.strerror} (PATH={prepared.env['PATH']})") from None
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def pump(fd: int, chunks: queue.Queue[bytes | None]) -> None:
    while True:
        try:
            data = os.read(fd, READ_CHUNK)
        except OSError:
            data = b""
        if not data:
            chunks.put(None)
            return
        chunks.put(data)

