"""Stacks and bundles for the command-job tests: the command kind on, state the job accounts can reach."""

from __future__ import annotations

import io
import os
import shutil
import site
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import next_redis_url
from tests.support import services
from tests.support.stack import Stack


def reachable_dir(prefix: str) -> Path:
    """A fresh folder that other accounts may pass through (pytest's own tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o711)
    return path


def command_stack(database: str, *, env: dict[str, str] | None = None, slots: int = 1) -> Iterator[Stack]:
    """A stack with the command kind enabled, on `database` (sqlite or postgres), one CPU worker."""
    tmp = reachable_dir("gpulab-cmd-")
    url, name = services.migrated_database(database, tmp)
    stack = Stack(database_url=url, redis_url=next_redis_url(), state_dir=tmp / "state",
                  env={"GPULAB_ENABLE_COMMAND_KIND": "true", **(env or {})})
    try:
        yield stack.start(slots=slots)
    finally:
        stack.stop(after=lambda: _clean_up(tmp, name))


def _clean_up(tmp: Path, database: str | None) -> None:
    if database:
        services.drop_pg_database(database)
    shutil.rmtree(tmp, ignore_errors=True)


def tar_bytes(files: dict[str, bytes], *, links: dict[str, str] | None = None, gzip: bool = True) -> bytes:
    """A tar archive holding these files (and symbolic links name → target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gzip else "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buf.getvalue()


def _reachable_by_others(path: Path) -> bool:
    """Whether an account other than root may execute this file (every folder on the way passable)."""
    real = Path(os.path.realpath(path))
    for folder in real.parents:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(real.stat().st_mode & stat.S_IXOTH)


def lab_python_env(where: Path) -> Path:
    """A venv that the job accounts can run, seeing this test run's packages (torch) through a .pth.

    The worker's own interpreter may live where other accounts cannot reach it (a pyenv under
    /root): a lab registers an environment its members can run, and so do the tests.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(sys.executable), Path(f"/usr/bin/{version}"), Path(f"/usr/local/bin/{version}")):
        if candidate.exists() and _reachable_by_others(candidate):
            python = candidate
            break
    else:
        raise RuntimeError(f"no {version} that other accounts may run; install one (apt-get install {version})")
    prefix = where / "pyenv"
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(prefix)], check=True)
    packages = next(prefix.glob("lib/python*/site-packages"))
    (packages / "gpulab_test_run.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return prefix


def with_lab_env(stack: Stack, name: str = "lab") -> str:
    """Register the job accounts' Python environment on a running stack; returns its name."""
    prefix = lab_python_env(stack.state_dir.parent)
    stack.api("PUT", f"/envs/{name}", json={"path": str(prefix)})
    return name
