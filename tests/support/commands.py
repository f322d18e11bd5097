"""Stacks and bundles for the command-job tests: the command kind on, state the job accounts can reach."""

from __future__ import annotations

import io
import os
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


def command_stack(database: str, *, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A stack with the command kind enabled, on `database` (sqlite or postgres)."""
    tmp = reachable_dir("gpulab-cmd-")
    name = None
    if database == "sqlite":
        url = f"sqlite:///{tmp / 'gpulab.sqlite3'}"
    else:
        url, name = services.create_pg_database()
    stack = Stack(database_url=url, redis_url=next_redis_url(), state_dir=tmp / "state",
                  env={"GPULAB_ENABLE_COMMAND_KIND": "true", **(env or {})})
    try:
        yield stack.start()
    finally:
        stack.stop()
        if name:
            services.drop_pg_database(name)


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
