"""Bundles on disk: a member's packed working directory, stored once under its sha256.

An upload streams to a temporary file beside the store while it is hashed and counted; past
the size limit it stops at once (413). The archive is then read entry by entry and refused
(422) if any entry is absolute, climbs out with `..`, is a device or FIFO, or is a link that
points outside the bundle. Only then, and only after its row is committed, is it renamed to
`<sha256>.tar`: a refused or broken upload leaves nothing behind, and an expiry running at the
same moment cannot remove a file whose row it did not see (`retire`). Unpacking checks the same
rules again (the worker trusts no file).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from service.errors import GpulabError

CHUNK = 1 << 20
# A bundle may unpack to this many times its packed size limit (a bomb stops here).
UNPACK_FACTOR = 10
MAX_FILES = 100_000


class BundleTooLarge(GpulabError):
    """The uploaded bundle is larger than the server's `GPULAB_MAX_BUNDLE_MB`."""

    code, status = "bundle_too_large", 413
    help = "Leave data and outputs out of the working directory (list them in `.gpulabignore`), or ask an admin."


class InvalidBundle(GpulabError):
    """The uploaded bundle is not a tar archive, or holds an entry that could escape its folder."""

    code, status = "invalid_bundle", 422
    help = "Pack the folder with `gpulab submit --working-dir DIR`; remove links that point outside it."


@dataclass(frozen=True)
class BundleInfo:
    sha256: str
    size_bytes: int
    files: int
    unpacked_bytes: int
    staged: Path  # the checked upload, moved into the store by `place` once its row is committed


def bundle_file(root: Path, sha256: str) -> Path:
    """Where the bundle with this content is stored."""
    return root / f"{sha256}.tar"


def _limit_text(limit_bytes: int) -> str:
    return f"GPULAB_MAX_BUNDLE_MB={limit_bytes // 2**20}"


async def receive(chunks: AsyncIterator[bytes], *, root: Path, limit_bytes: int) -> BundleInfo:
    """Stream an upload beside the store and check it; returns what was staged (raises on refusal,
    leaving nothing). The caller records the row, then calls `place`, and `discard` in any case."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)  # job processes never read another member's code
    fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=root)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit_bytes:
                    raise BundleTooLarge(f"the bundle is larger than {_limit_text(limit_bytes)}; "
                                         "leave data out (.gpulabignore) or ask an admin to raise it",
                                         field="body", value=size, extra={"limit_mb": limit_bytes // 2**20})
                digest.update(chunk)
                f.write(chunk)
        if size == 0:
            raise InvalidBundle("the bundle is empty; send a tar archive of the working directory",
                                field="body", value=0)
        files, unpacked = inspect(tmp, max_unpacked=limit_bytes * UNPACK_FACTOR)
        os.chmod(tmp, 0o600)
    except BaseException:
        discard(tmp)
        raise
    return BundleInfo(sha256=digest.hexdigest(), size_bytes=size, files=files, unpacked_bytes=unpacked,
                      staged=tmp)


def place(root: Path, info: BundleInfo) -> None:
    """Move a staged upload into the store (after its row is committed; the same content twice is
    the same file)."""
    os.replace(info.staged, bundle_file(root, info.sha256))


def discard(staged: Path) -> None:
    """Remove a staged upload that was refused or not placed."""
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why an archive entry may not be unpacked, or None when it may."""
    name = member.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "climbs out of the folder with '..'"
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        return "is a device or FIFO"
    if member.issym() or member.islnk():
        target = member.linkname
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            return f"is a link pointing outside the bundle ({target})"
    elif not (member.isfile() or member.isdir()):
        return "is not a file, folder or link"
    return None


def inspect(path: Path, *, max_unpacked: int) -> tuple[int, int]:
    """Check every entry of an archive; returns (files, unpacked bytes) or raises InvalidBundle."""
    files = unpacked = 0
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                problem = member_problem(member)
                if problem:
                    raise InvalidBundle(f"bundle entry {member.name!r} {problem}; it was refused",
                                        field="body", value=member.name)
                files += member.isfile()
                unpacked += member.size if member.isfile() else 0
                if unpacked > max_unpacked or files > MAX_FILES:
                    raise InvalidBundle(f"the bundle unpacks to more than {max_unpacked // 2**20} MiB or "
                                        f"{MAX_FILES} files", field="body", value=unpacked)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidBundle(f"the bundle is not a tar archive ({exc}); pack it with `gpulab submit "
                            "--working-dir` or `tar czf`", field="body", value=None) from None
    return files, unpacked


def unpack(path: Path, dest: Path, *, max_unpacked: int) -> int:
    """Unpack a stored bundle into an empty folder; returns the number of files."""
    files, _ = inspect(path, max_unpacked=max_unpacked)
    with tarfile.open(path, "r:*") as archive:
        # The `data` filter refuses the same things again, and drops set-id bits and owners.
        archive.extractall(dest, filter="data")
    return files


def retire(root: Path, sha256: str, *, wanted: Callable[[], bool]) -> bool:
    """Delete a bundle's file once no row refers to it; returns whether it was deleted.

    The file is first moved aside, then `wanted` reads the rows afresh: an upload of the same
    content that committed its row meanwhile gets the file back, and one that commits later
    places its own file after its commit. Deleting straight after the expiry's commit would
    remove a file whose new row the expiry never saw.
    """
    path = bundle_file(root, sha256)
    aside = path.with_name(f".retiring-{sha256}-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return False
    if wanted():
        os.replace(aside, path)
        return False
    aside.unlink()
    return True
