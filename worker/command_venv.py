"""A bundle's requirements.txt: a venv on top of the chosen environment, built once and reused.

The venv is made with `--system-site-packages`, and a `.pth` file adds the base environment's
own site-packages (a venv on top of a venv would otherwise see only the base interpreter's),
so torch comes from the base and only what the requirements add is installed. It is cached by
the hash of the base prefix, its interpreter and the requirements' text (not the files a line
names: a changed local wheel needs a changed line, a version say), per account: it is
built *as the job's account* (pip runs members' setup code, never as root), and a member's
environment is never shared with another account. pip's output goes to the job's log; a
failed build fails the job with `env_build_failed`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from jobs.base import JobContext
from service.models import FailReason
from service.settings import Settings
from worker.command_account import Account

VENVS_DIR = ".venvs"
COMPLETE = ".gpulab-complete"


class EnvBuildFailed(Exception):
    """The requirements could not be installed; the message says why (the log has pip's output)."""

    reason = FailReason.env_build_failed


def venv_key(prefix: Path, requirements: bytes) -> str:
    """The cache key: the base prefix, the interpreter it runs, and the requirements."""
    python = prefix / "bin" / "python"
    real = os.path.realpath(python)
    return hashlib.sha256(f"{prefix}\0{real}\0".encode() + requirements).hexdigest()[:24]


def venv_for(*, settings: Settings, account: Account, prefix: Path, requirements: Path, env: dict[str, str],
             ctx: JobContext) -> Path:
    """The prefix of a venv holding the requirements on top of `prefix` (built now if needed)."""
    text = requirements.read_bytes()
    root = settings.runs_root / VENVS_DIR
    root.mkdir(exist_ok=True)
    os.chmod(root, 0o711)
    target = root / f"{account.uid}-{venv_key(prefix, text)}"
    lock_path = root / f".{target.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another job of the same account builds it: wait for it
        if (target / COMPLETE).exists():
            ctx.log(f"requirements.txt: reusing the environment built for it ({target.name})")
            return target
        if target.exists():
            shutil.rmtree(target)  # a build that died half-way
        target.mkdir(mode=0o700)
        if account.switch:
            os.chown(target, account.uid, account.gid)
        ctx.log(f"requirements.txt: building an environment on {prefix} ({target.name})")
        try:
            base_sites = _run(account, [str(prefix / "bin" / "python"), "-c",
                                        "import site; print('\\n'.join(site.getsitepackages()))"], env, ctx,
                              what="reading the base environment", quiet=True)
            _run(account, [str(prefix / "bin" / "python"), "-m", "venv", "--system-site-packages", str(target)],
                 env, ctx, what="python -m venv")
            site_packages = next(target.glob("lib/python*/site-packages"))
            # addsitedir, not bare paths: the base's own .pth files (editable installs) count too.
            pth = "".join(f"import site; site.addsitedir({d!r})\n" for d in base_sites.splitlines() if d)
            _run(account, [str(target / "bin" / "python"), "-c",
                           f"open({str(site_packages / '_gpulab_base.pth')!r}, 'w').write({pth!r})"], env, ctx,
                 what="linking the base environment")
            _run(account, [str(target / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                           "--no-input", "-r", str(requirements)], env, ctx, what="pip install -r requirements.txt",
                 cwd=requirements.parent)  # relative paths in it are the project's, as pip reads them
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        (target / COMPLETE).touch()
        return target


def _run(account: Account, argv: list[str], env: dict[str, str], ctx: JobContext, *, what: str,
         quiet: bool = False, cwd: Path | None = None) -> str:
    """Run one build step as the account, its output into the job's log; raises EnvBuildFailed."""
    switch: dict[str, Any] = {}
    if account.switch:
        switch = {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}
    proc = subprocess.Popen(argv, env=env, cwd=cwd or env.get("TMPDIR", "/"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, umask=0o077,
                            text=True, errors="replace", **switch)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if not quiet:
                ctx.log(line.rstrip("\n"))
        code = proc.wait()
    finally:
        if proc.poll() is None:  # the time limit or a cancel, raised into this thread
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if code != 0:
        tail = "\n".join(lines[-15:])
        raise EnvBuildFailed(f"building the job's environment from requirements.txt failed ({what} exited with "
                             f"code {code}); last output:\n{tail}")
    return "\n".join(lines)
