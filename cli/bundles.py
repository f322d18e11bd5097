"""Packing a working directory into a bundle, uploading it, and submitting command jobs.

The archive is reproducible (sorted entries, no owners, gzip without a timestamp), so an
unchanged directory packs to the same sha256 and the server, which keeps bundles by sha256,
is not sent it twice. `.gitignore` and `.gpulabignore` patterns are honoured; `.git`,
`__pycache__` and virtual environments are never packed, nor links pointing outside.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import os
import re
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.client import Api, UsageError

NEVER = frozenset({".git", ".hg", ".svn", "__pycache__", ".ipynb_checkpoints", ".mypy_cache", ".pytest_cache",
                   ".ruff_cache", "node_modules"})
IGNORE_FILES = (".gitignore", ".gpulabignore")
CHUNK = 1 << 20
ENV_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)


@dataclass
class Rule:
    pattern: str
    negate: bool
    dir_only: bool
    anchored: bool
    base: str  # the folder (relative, '' for the root) whose ignore file holds the rule

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if self.base:
            if not rel.startswith(self.base + "/"):
                return False
            rel = rel[len(self.base) + 1:]
        if self.anchored:
            return fnmatch.fnmatchcase(rel, self.pattern) or _glob_star(rel, self.pattern)
        name = rel.rsplit("/", 1)[-1]
        return fnmatch.fnmatchcase(name, self.pattern) or fnmatch.fnmatchcase(rel, "*/" + self.pattern) \
            or fnmatch.fnmatchcase(rel, self.pattern)


def _glob_star(rel: str, pattern: str) -> bool:
    """`**/x` and `a/**` as gitignore reads them (fnmatch's `*` already crosses '/')."""
    return "**" in pattern and fnmatch.fnmatchcase(rel, pattern.replace("**/", "*").replace("/**", "/*"))


def parse_ignore(text: str, base: str = "") -> list[Rule]:
    """The rules of one .gitignore-style file."""
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        rules.append(Rule(line.lstrip("/"), negate, dir_only, anchored, base))
    return rules


def _ignored(rules: Sequence[Rule], rel: str, is_dir: bool) -> bool:
    verdict = False
    for rule in rules:  # the last matching rule wins, as in git
        if rule.matches(rel, is_dir):
            verdict = not rule.negate
    return verdict


def _is_venv(path: Path) -> bool:
    return (path / "pyvenv.cfg").exists() or (path / "conda-meta").is_dir() \
        or (path / "bin" / "activate").exists()


@dataclass
class Packed:
    path: Path
    sha256: str
    size: int
    files: int
    skipped: list[str] = field(default_factory=list)


def walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of everything to pack, folders before their contents, sorted."""
    rules: list[Rule] = []
    for name in IGNORE_FILES:
        if (root / name).is_file():
            rules += parse_ignore((root / name).read_text(errors="replace"))

    def visit(folder: Path, prefix: str, rules: list[Rule]) -> Iterator[tuple[str, Path]]:
        if prefix and (folder / ".gitignore").is_file():
            rules = rules + parse_ignore((folder / ".gitignore").read_text(errors="replace"), prefix.rstrip("/"))
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            rel = prefix + entry.name
            path = Path(entry.path)
            is_dir = entry.is_dir(follow_symlinks=False)
            if entry.name in NEVER or _ignored(rules, rel, is_dir) or (is_dir and _is_venv(path)):
                continue
            yield rel, path
            if is_dir:
                yield from visit(path, rel + "/", rules)

    yield from visit(root, "", rules)


def pack(root: Path) -> Packed:
    """A reproducible .tar.gz of the working directory in a temporary file."""
    root = root.resolve()
    if not root.is_dir():
        raise UsageError(f"--working-dir {root}: not a folder; name the folder holding your code")
    fd, name = tempfile.mkstemp(prefix="gpulab-bundle-", suffix=".tar.gz")
    os.close(fd)
    files = 0
    skipped: list[str] = []
    with open(name, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for rel, path in walk(root):
            if path.is_symlink():
                target = os.path.realpath(path)
                if not (target == str(root) or target.startswith(str(root) + os.sep)):
                    skipped.append(f"{rel} (a link pointing outside the folder)")
                    continue
            info = archive.gettarinfo(str(path), arcname=rel)
            if not (info.isfile() or info.isdir() or info.issym()):
                skipped.append(f"{rel} (not a file, folder or link)")
                continue
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                with open(path, "rb") as f:
                    archive.addfile(info, f)
                files += 1
            else:
                archive.addfile(info)
    digest = hashlib.sha256()
    with open(name, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return Packed(path=Path(name), sha256=digest.hexdigest(), size=os.path.getsize(name), files=files,
                  skipped=skipped)


def upload(api: Api, packed: Packed, *, show_progress: bool = True) -> dict[str, Any]:
    """Send the bundle unless the server has it for us already; returns the server's record."""
    # A 404 only means "send it"; any other answer is read (and refused) as usual.
    if api.http.get(f"/bundles/{packed.sha256}").status_code != 404:
        return dict(api.get(f"/bundles/{packed.sha256}"))

    def chunks() -> Iterator[bytes]:
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        with open(packed.path, "rb") as f, Progress("uploading", BarColumn(), DownloadColumn(),
                                                    TransferSpeedColumn(), disable=not show_progress,
                                                    transient=True, console=_stderr()) as bar:
            task = bar.add_task("upload", total=packed.size)
            for chunk in iter(lambda: f.read(CHUNK), b""):
                bar.advance(task, len(chunk))
                yield chunk

    return dict(api.post("/bundles", content=chunks(),
                         headers={"Content-Type": "application/gzip", "Content-Length": str(packed.size)},
                         timeout=None))


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """`--env K=V` items as a dict (a repeated name is an error, not a silent overwrite)."""
    env: dict[str, str] = {}
    for item in items:
        match = ENV_ITEM.match(item)
        if not match:
            raise UsageError(f"--env {item!r}: write NAME=VALUE")
        if match.group(1) in env:
            raise UsageError(f"--env {match.group(1)} is given twice; give each name once")
        env[match.group(1)] = match.group(2)
    return env


def command_argv(argv: Sequence[str] | None = None) -> list[str] | None:
    """What follows the first `--` of the command line (the command to run), or None."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        return None
    return args[args.index("--") + 1:]


def command_params(api: Api, argv: Sequence[str], *, working_dir: Path | None = None,
                   env: dict[str, str] | None = None, python_env: str | None = None, requeue: bool = False,
                   say: Any = None) -> dict[str, Any]:
    """The params of a command job: the working directory packed and uploaded first."""
    if not argv:
        raise UsageError("nothing to run after `--`: write the command, e.g. gpulab submit -- python train.py")
    params: dict[str, Any] = {"argv": list(argv), "env": env or {}, "requeue": requeue}
    if python_env:
        params["python_env"] = python_env
    if working_dir is not None:
        packed = pack(working_dir)
        try:
            if say:
                files = f"{packed.files} file" + ("" if packed.files == 1 else "s")
                say(f"packed {working_dir}: {files}, {_size(packed.size)} (sha256 {packed.sha256[:12]})")
                for skipped in packed.skipped:
                    say(f"not packed: {skipped}")
            bundle = upload(api, packed, show_progress=say is not None)
        finally:
            packed.path.unlink(missing_ok=True)
        params["bundle"] = bundle["sha256"]
    return params


def submit_command(api: Api, argv: Sequence[str], *, working_dir: str | Path | None = None,
                   env: dict[str, str] | None = None, python_env: str | None = None, requeue: bool = False,
                   device: str = "cpu", **fields: Any) -> dict[str, Any]:
    """Submit a command job from Python (for scripted submissions); returns the job as the API shows it.

        from cli.bundles import submit_command
        job = submit_command(Api(get_settings()), ["python", "train.py", "--lr", "0.1"], working_dir=".")
    """
    params = command_params(api, argv, working_dir=None if working_dir is None else Path(working_dir),
                            env=env, python_env=python_env, requeue=requeue)
    return dict(api.post("/jobs", json={"kind": "command", "params": params, "device": device, **fields}))


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"
