"""A command job's folders: made for its account, filled from its bundle, harvested when it ends.

runs/<installation>-<job>-<attempt>/ belongs to the job's account (0700) and holds `work/` (the bundle, the
working directory), `output/` (GPULAB_OUTPUT_DIR), `tmp/` and, for accounts without a home
folder, `home/`. At the end, files created or changed in `work/` and everything in `output/`
are copied into the job's artifact folder, which the job cannot reach. The walk opens every
folder and file relative to its parent with O_NOFOLLOW: a link is never followed, and a link
swapped in while the walk runs is refused, not read. A worker killed mid-job leaves its run
folder behind; the next worker start removes every folder whose job and attempt no longer run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from jobs.artifacts import open_no_follow
from jobs.base import JobContext, JobError
from service.bundles import UNPACK_FACTOR, bundle_file, unpack
from service.db import Database
from service.live import installation
from service.models import Job, JobStatus
from service.settings import Settings
from worker.command_account import Account, unreachable_parent

SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_OUTPUT_FILES = 1000
SKIP_DIRS = frozenset({"__pycache__", ".git", ".ipynb_checkpoints"})
Snapshot = dict[str, tuple[int, int]]


@dataclass
class RunFolder:
    root: Path
    work: Path
    output: Path
    tmp: Path
    home: Path
    # False when the command runs in place in a server folder: only output/ is collected then
    # (root must never copy out what the member's account could not read).
    scan_work: bool = True


def make_run_folder(settings: Settings, job_id: int, attempt: int, account: Account) -> RunFolder:
    """A fresh, empty run folder owned by the job's account."""
    blocked = unreachable_parent(settings.runs_root) if account.switch else None
    if blocked is not None:
        # The command would start there (root enters it first) but reach nothing by its path:
        # not its output folder, TMPDIR or HOME. Say so instead of failing obscurely.
        raise JobError(f"{blocked} is closed to other accounts, so {account.name} cannot reach its run folder "
                       f"under {settings.runs_root}; an admin sets GPULAB_RUNS_DIR to a folder outside it")
    # The installation id keeps stacks that share GPULAB_RUNS_DIR apart: job ids repeat across them.
    root = settings.runs_root / f"{installation()}-{job_id}-{attempt}"
    if root.exists() or root.is_symlink():
        remove_run_folder(root)  # left by a run whose worker died
    root.mkdir(mode=0o700)
    folder = RunFolder(root=root, work=root / "work", output=root / "output", tmp=root / "tmp", home=root / "home")
    for path in (folder.work, folder.output, folder.tmp, folder.home):
        path.mkdir(mode=0o700)
    return folder


def fill_from_bundle(settings: Settings, folder: RunFolder, sha256: str) -> int:
    """Unpack the job's bundle into work/; returns the number of files."""
    path = bundle_file(settings.bundles_root, sha256)
    if not path.is_file():
        raise FileNotFoundError(f"bundle {sha256} is no longer stored (it expired); submit again to upload it")
    return unpack(path, folder.work, max_unpacked=settings.max_bundle_mb * 2**20 * UNPACK_FACTOR)


def hand_over(folder: RunFolder, account: Account) -> None:
    """Give the whole run folder to the job's account (links are changed, never followed)."""
    if not account.switch:
        return
    for dirpath, dirnames, filenames in os.walk(folder.root):
        os.lchown(dirpath, account.uid, account.gid)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), account.uid, account.gid)


def snapshot(work: Path) -> Snapshot:
    """(size, mtime) of every file in work/ before the command starts."""
    return {rel: (st.st_size, st.st_mtime_ns) for rel, st in _walk(work)}


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, stat) of every regular file below root, never through a link."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    yield from _walk_fd(fd, "")


def _walk_fd(dir_fd: int, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
    try:
        with os.scandir(dir_fd) as entries:
            items = [(e.name, e.stat(follow_symlinks=False)) for e in entries]
        for name, st in sorted(items):
            rel = prefix + name
            if stat.S_ISREG(st.st_mode):
                yield rel, st
            elif stat.S_ISDIR(st.st_mode) and name not in SKIP_DIRS:
                try:
                    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                except OSError:
                    continue  # swapped for a link or removed meanwhile
                yield from _walk_fd(sub, rel + "/")
    finally:
        os.close(dir_fd)


def artifact_name(rel: str) -> str:
    """The artifact name of a file at `rel` in its folder: sub-folders joined with '__'."""
    return rel.replace("/", "__")


@dataclass
class Harvest:
    kept: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(size for _, size in self.kept)


def collect_outputs(folder: RunFolder, before: Snapshot, ctx: JobContext, *, limit_bytes: int,
                    requested: Sequence[tuple[str, str | None]] = ()) -> Harvest:
    """Copy new or changed files of work/, all of output/ and the requested ones into the job's artifacts."""
    harvest = Harvest()
    seen: set[str] = set()
    candidates: list[tuple[Path, str, str]] = []  # (root, relative path, artifact name)
    for path, name in requested:
        rel, root = _inside(folder, path)
        if rel is None or root is None:
            harvest.skipped.append(f"{path} (not a file inside the working directory or GPULAB_OUTPUT_DIR)")
            continue
        candidates.append((root, rel, name or artifact_name(rel)))
    candidates += [(folder.output, rel, artifact_name(rel)) for rel, _ in _walk(folder.output)]
    if folder.scan_work:
        candidates += [(folder.work, rel, artifact_name(rel)) for rel, st in _walk(folder.work)
                       if before.get(rel) != (st.st_size, st.st_mtime_ns)]
    for root, rel, name in candidates:
        if name in seen:
            continue
        seen.add(name)
        if not SAFE.match(name) or ".." in name:
            harvest.skipped.append(f"{rel} (its name is not a plain file name)")
        elif len(harvest.kept) >= MAX_OUTPUT_FILES:
            harvest.skipped.append(f"{rel} (more than {MAX_OUTPUT_FILES} output files)")
        else:
            _copy(root, rel, name, ctx, harvest, limit_bytes)
    return harvest


def _inside(folder: RunFolder, path: str) -> tuple[str | None, Path | None]:
    """A requested path as (relative path, root) when it lies in work/ or output/."""
    full = Path(path) if path.startswith("/") else folder.work / path
    normal = Path(os.path.normpath(full))
    for root in (folder.work, folder.output) if folder.scan_work else (folder.output,):
        with contextlib.suppress(ValueError):
            rel = normal.relative_to(root).as_posix()
            if rel and rel != ".":
                return rel, root
    return None, None


def _copy(root: Path, rel: str, name: str, ctx: JobContext, harvest: Harvest, limit_bytes: int) -> None:
    try:
        fd = open_no_follow(root, rel)
    except OSError:
        harvest.skipped.append(f"{rel} (a link, or not a regular file)")
        return
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        size = st.st_size
        if st.st_nlink > 1:
            # A hard link may name a file the job's account cannot read; the copy runs as root.
            harvest.skipped.append(f"{rel} (a hard link)")
            return
        if harvest.total + size > limit_bytes:
            harvest.skipped.append(f"{rel} ({size} B: past the job's output limit, GPULAB_MAX_OUTPUT_MB)")
            return
        with open(ctx.artifact_path(name), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    harvest.kept.append((name, size))


def remove_run_folder(root: Path) -> None:
    """Delete a run folder (rmtree never follows links out of it)."""
    with contextlib.suppress(FileNotFoundError):
        if root.is_symlink():
            root.unlink()
        else:
            shutil.rmtree(root)


RUN_FOLDER = re.compile(r"^(?P<installation>[0-9a-f]+)-(?P<job>[0-9]+)-(?P<attempt>[0-9]+)$")


def remove_stale_run_folders(settings: Settings, db: Database) -> int:
    """Remove this installation's run folders whose job and attempt no longer run (a worker killed
    mid-job never removed its own); returns how many. A folder is made only after its job is
    claimed, so a folder of a running attempt is never taken for a stale one."""
    inst = installation()
    if not inst or not settings.runs_root.is_dir():
        return 0
    found: dict[Path, tuple[int, int]] = {}
    for entry in settings.runs_root.iterdir():
        match = RUN_FOLDER.match(entry.name)
        if match and match["installation"] == inst:
            found[entry] = (int(match["job"]), int(match["attempt"]))
    if not found:
        return 0
    live = (JobStatus.dispatched, JobStatus.running)
    with db.reading() as session:
        running = set(session.execute(
            select(Job.id, Job.attempt).where(Job.id.in_({job for job, _ in found.values()}), Job.status.in_(live))
        ).tuples())
    stale = [path for path, key in found.items() if key not in running]
    for path in stale:
        remove_run_folder(path)
    return len(stale)
