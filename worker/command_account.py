"""Who a command job runs as, and what it must not read.

A worker running as root starts a member's command as the Unix account an admin mapped them to
(`gpulab users add NAME --unix-user ACCOUNT`), and never as root. An unmapped member's command
runs as an account of that member's own: uid and gid GPULAB_COMMAND_UID_BASE + the member's id,
with no passwd entry and no supplementary groups (as systemd's DynamicUser does), so two
members' jobs can neither read each other's folders nor signal each other's processes, and
their cached environments stay apart. An admin may name one shared account instead
(GPULAB_COMMAND_USER). A worker that is not root cannot switch users: it runs commands as
itself, and says so when it starts.

Everything the service keeps in its state dir is made private to the service's own account
(files 0600, folders 0700); only the runs folder (0711: pass through, no listing) and the
library folder holding `gpulab_report` (0755) stay reachable, so a job can reach its own run
folder and nothing else. The modes are set again at every command start, because the
database's WAL files and new artifact folders appear while the service runs.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from jobs.base import JobError
from service.settings import Settings
from service.store.users import member_account_name

log = logging.getLogger("gpulab.worker")

LIB_DIR = ".lib"
REPORT_MODULE = Path(__file__).resolve().parent.parent / "jobs" / "gpulab_report.py"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    switch: bool  # whether the worker switches to it (it is root)

    def describe(self) -> str:
        return f"{self.name} (uid {self.uid})" + ("" if self.switch else ", the worker's own account")


def is_root() -> bool:
    return os.geteuid() == 0


def resolve_account(settings: Settings, unix_user: str | None, *, member_id: int, member: str) -> Account:
    """The account this member's command runs as on this worker; raises JobError when it cannot."""
    if not is_root():
        me = pwd.getpwuid(os.geteuid())
        return Account(me.pw_name, me.pw_uid, me.pw_gid, tuple(os.getgroups()), me.pw_dir, switch=False)
    name = unix_user or settings.command_user
    if not name:
        return member_account(settings, member_id=member_id, member=member)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise JobError(f"the Unix account {name!r} does not exist on {settings.host}; an admin creates it "
                       "or maps the member to another (gpulab users set NAME --unix-user ACCOUNT)") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise JobError(f"the Unix account {name!r} is root (uid or gid 0): members' commands never run as root")
    groups = tuple(g for g in os.getgrouplist(name, entry.pw_gid) if g != 0)
    return Account(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir, switch=True)


def member_account(settings: Settings, *, member_id: int, member: str) -> Account:
    """The unmapped member's own account: a uid of its own that no passwd entry claims."""
    uid = settings.command_uid_base + member_id
    try:
        taken = pwd.getpwuid(uid).pw_name
    except KeyError:
        return Account(member_account_name(member), uid, uid, (), "", switch=True)
    raise JobError(f"uid {uid} (GPULAB_COMMAND_UID_BASE + member id {member_id}) belongs to the account {taken!r} "
                   f"on {settings.host}; an admin moves GPULAB_COMMAND_UID_BASE to a free range or maps {member} "
                   "to an account (gpulab users set NAME --unix-user ACCOUNT)")


def announce(settings: Settings) -> None:
    """Say at the worker's start whom command jobs will run as, and secure the state dir."""
    if is_root():
        # Only where command jobs may run: a first `./dev up` as root is not told to move a folder it never uses.
        blocked = unreachable_parent(settings.runs_root) if settings.enable_command_kind else None
        if blocked is not None:
            log.warning("%s is closed to other accounts (mode %o): command jobs cannot reach their folders "
                        "under %s; set GPULAB_RUNS_DIR to a folder outside it (/var/lib/gpulab-runs)",
                        blocked, blocked.stat().st_mode & 0o777, settings.runs_root)
        if settings.enable_command_kind:
            for warning in open_doors(settings):
                log.warning("%s", warning)
        if not settings.command_user:
            log.info("command jobs run as their members' mapped Unix accounts; an unmapped member's as an "
                     "account of its own (uid %s + member id)", settings.command_uid_base)
        else:
            _announce_shared(settings)
    else:
        me = pwd.getpwuid(os.geteuid())
        log.warning("this worker is not root: command jobs run as %s, the worker's own account, and can "
                    "read whatever it can (its state dir, database and tokens). Run workers as root to "
                    "run members' commands as their own accounts.", me.pw_name)
    secure_state(settings)


def open_doors(settings: Settings) -> list[str]:
    """The service's database and broker when they ask for no password: a command job has this
    machine's network and could log in to them as the service (no secret of its own needed)."""
    doors = []
    redis = urlsplit(settings.redis_url)
    if redis.scheme in ("redis", "rediss") and not redis.password:
        doors.append(f"the broker at {redis.hostname}:{redis.port or 6379} asks for no password: members' command "
                     "jobs can reach it and read or empty every queue; give it one (requirepass) and put it in "
                     "GPULAB_REDIS_URL (redis://:PASSWORD@host:port/0)")
    database = urlsplit(settings.database_url)
    if database.scheme.startswith("postgresql") and database.hostname and not database.password:
        doors.append(f"the database at {database.hostname}:{database.port or 5432} is reached with no password: "
                     "if it trusts that address, members' command jobs can log in as the service; give its "
                     "account a password and put it in GPULAB_DATABASE_URL")
    return doors


def _announce_shared(settings: Settings) -> None:
    try:
        shared = pwd.getpwnam(settings.command_user)
        log.info("command jobs run as their members' mapped Unix accounts; unmapped members share %s (uid %s): "
                 "their jobs may read each other's folders", settings.command_user, shared.pw_uid)
    except KeyError:
        log.warning("GPULAB_COMMAND_USER=%s does not exist here: unmapped members' command jobs will "
                    "fail until an admin creates it", settings.command_user)


def unreachable_parent(path: Path) -> Path | None:
    """The first folder above `path` that other accounts may not pass through, or None."""
    for folder in reversed(path.resolve().parents):
        with contextlib.suppress(FileNotFoundError):
            if not folder.stat().st_mode & stat.S_IXOTH:
                return folder
    return None


def _private(path: Path) -> None:
    """Make a file 0600 or a folder 0700 (without following a link)."""
    # Missing, or not ours to change (a non-root worker meets files it does not own): leave it.
    with contextlib.suppress(FileNotFoundError, PermissionError):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            return
        os.chmod(path, 0o700 if stat.S_ISDIR(mode) else 0o600)


def secure_state(settings: Settings) -> Path:
    """Set the modes that keep job processes out of the service's files; returns the lib folder."""
    state = settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    runs = settings.runs_root
    runs.mkdir(parents=True, exist_ok=True)
    os.chmod(runs, 0o711)
    lib = runs / LIB_DIR
    lib.mkdir(exist_ok=True)
    os.chmod(lib, 0o755)
    target = lib / "gpulab_report.py"
    if not target.exists() or target.read_bytes() != REPORT_MODULE.read_bytes():
        tmp = lib / ".gpulab_report.py.tmp"
        shutil.copyfile(REPORT_MODULE, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    os.chmod(state, 0o711)  # pass through to runs/, list nothing
    keep_open = {runs.resolve()}
    for entry in state.iterdir():
        if entry.resolve() not in keep_open:
            _private(entry)
    for path in (settings.artifacts_root, settings.bundles_root, settings.credentials_file.expanduser()):
        _private(path)
    if settings.is_sqlite:
        db_file = Path(settings.database_url.split("///", 1)[-1])
        for suffix in ("", "-wal", "-shm", "-journal"):
            _private(db_file.with_name(db_file.name + suffix))
    return lib


def account_groups_name(account: Account) -> str:
    """The account's primary group name, for the job's log."""
    try:
        return grp.getgrgid(account.gid).gr_name
    except KeyError:
        return str(account.gid)


def can_enter(account: Account, path: Path) -> bool:
    """Whether the account may pass through this folder (the x bit that applies to it)."""
    st = path.stat()
    if account.uid == st.st_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == account.gid or st.st_gid in account.groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def first_closed_folder(account: Account, program: Path) -> Path | None:
    """The first folder on the way to `program` (links resolved) that the account cannot enter."""
    for folder in reversed(program.resolve().parents):
        try:
            if not can_enter(account, folder):
                return folder
        except OSError:
            return folder
    return None


def unreachable_program(account: Account, program: Path) -> str | None:
    """Why the account cannot run `program` when a folder on its way is closed (pyenv under /root), with what
    an admin and the member do about it; None when the way is open."""
    closed = first_closed_folder(account, program)
    if closed is None:
        return None
    real = program.resolve()
    where = program if real == program else f"{program} (→ {real})"
    return (f"{where} lies under {closed}, which {account.name} cannot enter; an admin registers a Python "
            "environment it can run (gpulab envs add NAME /opt/...) and the job names it with --python-env NAME")
