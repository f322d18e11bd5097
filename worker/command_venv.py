"""A bundle's requirements.txt: a venv on top of the chosen environment, built once and reused.

The venv is made with `--system-site-packages`, and a `.pth` file adds the base environment's
own site-packages (a venv on top of a venv would otherwise see only the base interpreter's),
so torch comes from the base and only what the requirements add is installed. It is cached by
the hash of the base prefix, its interpreter, the requirements' text and the content of every
project file or folder a line names (a rebuilt local wheel, a nested `-r` file), per account: it is
built *as the job's account* (pip runs members' setup code, never as root), and a member's
environment is never shared with another account. pip's output goes to the job's log as it
comes; a failed build fails the job with `env_build_failed`, a cancel stops it at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

from jobs.base import JobContext
from service.models import FailReason
from service.settings import Settings
from worker.command_account import Account, unreachable_program

VENVS_DIR = ".venvs"
COMPLETE = ".gpulab-complete"
STEP_POLL_S = 0.2  # how often a quiet build step looks for a cancel and commits its lines
# The base environment's site-packages, one a line, then whether it has pip.
BASE_PROBE = ("import importlib.util, site; print('\\n'.join(site.getsitepackages())); "
              "print('pip' if importlib.util.find_spec('pip') else 'no pip')")


class BuildCancelled(Exception):
    """The job was cancelled while its environment was being built (the build is stopped)."""

    reason = FailReason.cancelled


class EnvBuildFailed(Exception):
    """The requirements could not be installed; the message says why (the log has pip's output)."""

    reason = FailReason.env_build_failed


def venv_key(prefix: Path, requirements: bytes, named: bytes = b"") -> str:
    """The cache key: the base prefix, the interpreter it runs, the requirements and the digest
    of the project files they name."""
    python = prefix / "bin" / "python"
    real = os.path.realpath(python)
    return hashlib.sha256(f"{prefix}\0{real}\0".encode() + requirements + b"\0" + named).hexdigest()[:24]


def named_files_digest(requirements: Path, project: Path) -> bytes:
    """A digest of the project's files and folders that the requirements name (wheels, sdists,
    folders, nested -r/-c files), read without following links out of the project.
    Raises EnvBuildFailed for `-e` of a project folder: a cached venv would point into a run
    folder that is removed when the job ends."""
    digest = hashlib.sha256()
    seen: set[Path] = set()

    def visit(req: Path) -> None:
        if req in seen:
            return
        seen.add(req)
        for number, raw in enumerate(req.read_text(errors="replace").splitlines(), 1):
            words = raw.split(" #", 1)[0].split()
            if not words or words[0].startswith("#"):
                continue
            option, rest = (words[0], words[1:]) if words[0].startswith("-") else ("", words)
            for word in rest[:1] or [option.partition("=")[2]]:
                path = _inside(project, req.parent / word.removeprefix("file:"))
                if path is None:
                    continue
                if option in ("-e", "--editable"):
                    raise EnvBuildFailed(f"requirements.txt line {number}: `{raw.strip()}` installs the project in "
                                         "place, which a reused environment cannot keep; the command runs in its "
                                         "folder, so import it from there, or drop -e to install a copy")
                if option in ("-r", "--requirement", "-c", "--constraint") and path.is_file():
                    visit(path)
                else:
                    _hash_path(digest, project, path)

    visit(requirements)
    return digest.digest()


def _inside(project: Path, candidate: Path) -> Path | None:
    """The path if it exists inside the project and reaches no link, else None."""
    rel = os.path.relpath(os.path.normpath(candidate.absolute()), os.path.normpath(project.absolute()))
    if rel == ".." or rel.startswith("../"):
        return None
    path = project.resolve()
    for part in Path(rel).parts:
        path = path / part if part != "." else path
        if path.is_symlink() or not path.exists():
            return None
    return path


def _hash_path(digest: Any, project: Path, path: Path) -> None:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    for file in files:
        digest.update(str(file.relative_to(project.resolve())).encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())


def venv_for(*, settings: Settings, account: Account, prefix: Path, requirements: Path, env: dict[str, str],
             ctx: JobContext) -> Path:
    """The prefix of a venv holding the requirements on top of `prefix` (built now if needed)."""
    base = prefix / "bin" / "python"
    if (why := unreachable_program(account, base)) is not None:
        # Said before pip runs: otherwise the first step fails with a bare PermissionError.
        raise EnvBuildFailed(f"requirements.txt: cannot build its environment as {account.name}: {why}")
    text = requirements.read_bytes()
    root = settings.runs_root / VENVS_DIR
    root.mkdir(exist_ok=True)
    os.chmod(root, 0o711)
    target = root / f"{account.uid}-{venv_key(prefix, text, named_files_digest(requirements, requirements.parent))}"
    lock_path = root / f".{target.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another job of the same account builds it: wait for it
        if (target / COMPLETE).exists():
            (target / COMPLETE).touch()  # last used now: prune_venvs keeps it
            ctx.log(f"requirements.txt: reusing the environment built for it ({target.name})")
            return target
        if target.exists():
            shutil.rmtree(target)  # a build that died half-way
        target.mkdir(mode=0o700)
        if account.switch:
            os.chown(target, account.uid, account.gid)
        ctx.log(f"requirements.txt: building an environment on {prefix} ({target.name})")
        try:
            probe = _run(account, [str(prefix / "bin" / "python"), "-c", BASE_PROBE], env, ctx,
                         what="reading the base environment", quiet=True).splitlines()
            base_sites, base_has_pip = probe[:-1], probe[-1] == "pip"
            # A venv of its own pip (ensurepip) also gets that Python's bundled setuptools, which
            # shadows the base's: torch asks for setuptools>=77, so `torch` in requirements.txt
            # sent pip to the index for it (env_build_failed offline) and ensurepip cost seconds.
            # The base's pip, seen through the .pth below, installs into the venv all the same.
            _run(account, [str(prefix / "bin" / "python"), "-m", "venv", "--system-site-packages",
                           *(["--without-pip"] if base_has_pip else []), str(target)],
                 env, ctx, what="python -m venv")
            site_packages = next(target.glob("lib/python*/site-packages"))
            # addsitedir, not bare paths: the base's own .pth files (editable installs) count too.
            pth = "".join(f"import site; site.addsitedir({d!r})\n" for d in base_sites if d)
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


def prune_venvs(settings: Settings, *, now: float | None = None) -> int:
    """Remove cached venvs no job has used for longer than a job may run or a bundle is kept
    (so none in use by a running job goes); returns how many. Run at a worker's start."""
    root = settings.runs_root / VENVS_DIR
    if not root.is_dir():
        return 0
    keep_s = max(settings.bundle_keep_s, settings.max_timeout_s) + 86400
    cutoff = (now if now is not None else time.time()) - keep_s
    removed = 0
    for target in root.iterdir():
        if target.name.startswith(".") or not target.is_dir() or target.is_symlink():
            continue
        marker = target / COMPLETE
        used = marker.stat().st_mtime if marker.exists() else target.stat().st_mtime
        if used >= cutoff:
            continue
        with open(root / f".{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # never under a build of the same venv
            shutil.rmtree(target, ignore_errors=True)
        removed += 1
    return removed


def _run(account: Account, argv: list[str], env: dict[str, str], ctx: JobContext, *, what: str,
         quiet: bool = False, cwd: Path | None = None) -> str:
    """Run one build step as the account, its output into the job's log; raises EnvBuildFailed,
    or BuildCancelled when the job is cancelled meanwhile."""
    switch: dict[str, Any] = {}
    if account.switch:
        switch = {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}
    proc = subprocess.Popen(argv, env=env, cwd=cwd or env.get("TMPDIR", "/"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, umask=0o077,
                            text=True, errors="replace", **switch)
    assert proc.stdout is not None
    # Read by a thread, so that this one asks should_stop() while a step is quiet (venv, a
    # download, a compile): the lines before it reach the log then, not with the step's next line
    # (a member watched "running" for the whole build), and a cancel stops pip at once.
    output: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump_lines, args=(proc.stdout, output), daemon=True).start()
    lines: list[str] = []
    try:
        while (line := _next_line(output, ctx)) is not None:
            if line:
                lines.append(line.rstrip("\n"))
                if not quiet:
                    ctx.log(line.rstrip("\n"))
        code = proc.wait()
    finally:
        if proc.poll() is None:  # a cancel, or the time limit raised into this thread
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if code != 0:
        tail = "\n".join(lines[-15:])
        raise EnvBuildFailed(f"building the job's environment from requirements.txt failed ({what} exited with "
                             f"code {code}); last output:\n{tail}")
    return "\n".join(lines)


def _pump_lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    with contextlib.suppress(ValueError, OSError):  # closed under it when the build is stopped
        for line in stream:
            into.put(line)
    into.put(None)


def _next_line(output: queue.Queue[str | None], ctx: JobContext) -> str | None:
    """The step's next line, "" after a quiet moment, None at its end; raises on a cancel."""
    try:
        line = output.get(timeout=STEP_POLL_S)
    except queue.Empty:
        line = ""
    if ctx.should_stop():  # also commits the lines logged so far
        raise BuildCancelled("stopped after a cancel, while building the environment")
    return line
