"""Reading a job's artifacts without following links: the one safe way to record or serve them.

A job (or a member's command) can leave a symlink where an artifact should be; followed, it
served /etc/shadow. Every artifact is opened relative to the job's folder with O_NOFOLLOW on
the folder and on the file, and only a regular file counts: there is no moment between a
check and the open in which a link could be swapped in.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# torch.save's writer reports a short write in its own words: "file write failed", or (torch
# 2.13, saving to a path) "unexpected pos 1472 vs 1366" raised from "basic_ios::clear: iostream error".
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "file write failed",
                   "basic_ios::clear: iostream error", "inline_container.cc")


class ArtifactRefused(Exception):
    """The name is not a regular file inside the job's folder (missing, a link, a folder, a device)."""


def open_no_follow(root: Path, rel: str) -> int:
    """An fd of the regular file root/rel, opened a component at a time without following any link.

    The one way gpulab opens a file a job may have made (recording, collecting, serving): a link
    at any step raises OSError (ELOOP), so nothing outside the job's folder is ever reached.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    parts = rel.split("/")
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        out = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(out).st_mode):
        os.close(out)
        raise OSError(errno.EINVAL, "not a regular file")
    return out


def _open_in(folder: Path, name: str) -> int:
    """An fd of folder/name, a plain file name, opened without following a link at either step."""
    if "/" in name or name in ("", ".", ".."):
        raise ArtifactRefused(f"{name!r} is not a plain file name")
    if not folder.is_dir() or folder.is_symlink():
        raise ArtifactRefused(f"the job's folder {folder} cannot be opened")
    try:
        return open_no_follow(folder, name)
    except OSError as exc:
        reason = "is a link" if exc.errno == errno.ELOOP else exc.strerror
        raise ArtifactRefused(f"{name!r} {reason}") from None


def open_artifact(folder: Path, name: str) -> tuple[BinaryIO, int]:
    """An open regular file in the job's folder and its size (serving); raises ArtifactRefused."""
    fd = _open_in(folder, name)
    size = os.fstat(fd).st_size
    return os.fdopen(fd, "rb"), size


def safe_artifact_size(folder: Path, name: str) -> int | None:
    """The size of folder/name when it is a regular file reached without a link, else None.

    The one check every artifact recorder uses (job contexts, command jobs' output collectors).
    """
    try:
        fd = _open_in(folder, name)
    except ArtifactRefused:
        return None
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def record_artifacts(folder: Path, names: Iterable[str], *, disk_full: bool = False) -> list[tuple[str, int]]:
    """(name, size) of each named artifact that may be recorded.

    After a disk-full failure nothing is recorded: any file written then may be cut short, and
    a truncated checkpoint or plot recorded as an artifact is worse than none.
    """
    if disk_full:
        return []
    out = []
    for name in names:
        size = safe_artifact_size(folder, name)
        if size is not None:
            out.append((name, size))
    return out


def is_disk_full(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) is a full disk or an exceeded quota.

    torch.save reports a full disk as a RuntimeError ("file write failed"), not an OSError,
    so the text is checked too.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if any(mark in str(current).lower() for mark in _DISK_FULL_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False
