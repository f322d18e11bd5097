"""A hostile command finds nothing of the service's: not the database, the tokens, the worker's
environment, other jobs' folders or the service's URLs, run as a mapped account and as the default.

CI runs as root, so the worker switches users; the accounts are made here with useradd and
removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.commands import command_stack, reachable_dir, tar_bytes
from tests.support.stack import Stack, free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs a root worker (CI runs as root)")

HOSTILE = textwrap.dedent('''
    import json, os, sys
    targets = json.loads(sys.argv[1])
    found = {}

    def probe(name, action):
        try:
            value = action()
            found[name] = "READ: " + str(value)[:80]
        except OSError as exc:
            found[name] = "denied (" + type(exc).__name__ + ")"

    for name, path in targets["files"].items():
        probe(name, lambda path=path: open(path, "rb").read(64))
    for name, path in targets["folders"].items():
        probe(name, lambda path=path: os.listdir(path))
    probe("parent environ", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read(64))
    leaked = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            text = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if "GPULAB_DATABASE_URL" in text or "GPULAB_REDIS_URL" in text:
            leaked.append(pid)
    found["environ of service processes"] = "READ: " + str(leaked) if leaked else "none readable"
    mine = {k: v for k, v in os.environ.items()
            if k in ("GPULAB_DATABASE_URL", "GPULAB_REDIS_URL", "GPULAB_TOKEN", "GPULAB_API_URL")
            or "redis://" in v or "sqlite" in v or "postgresql" in v or "glab_" in v}
    found["own environment"] = "READ: " + str(mine) if mine else "clean"
    others = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(pid) != os.getpid():
                os.kill(int(pid), 0)  # sends nothing; succeeds only for a process it may signal
                others.append(pid)
        except OSError:
            pass
    found["processes it may signal"] = "READ: " + str(others) if others else "denied (none)"
    found["uid"] = os.getuid()
    print("GPULAB " + json.dumps({"result": {"found": found}}))
''')


def useradd(name: str) -> None:
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def accounts() -> Iterator[dict[str, str]]:
    suffix = str(free_port())[-4:]
    names = {"alice": f"glalice{suffix}", "bob": f"glbob{suffix}"}
    for unix in names.values():
        useradd(unix)
    try:
        yield names
    finally:
        for unix in names.values():
            subprocess.run(["userdel", unix], capture_output=True)


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A lab folder admins let commands run in place in."""
    path = reachable_dir("gpulab-shared-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def iso_stack(accounts: dict[str, str], shared: Path) -> Iterator[Stack]:
    # Three slots: two other members' jobs run meanwhile.
    yield from command_stack("sqlite", slots=3, env={"GPULAB_COMMAND_SERVER_DIRS": str(shared)})


def token_of(stack: Stack, name: str, unix_user: str | None) -> str:
    args = ["users", "add", name] + (["--unix-user", unix_user] if unix_user else [])
    return stack.gpulab(*args).stdout.strip()


def upload(stack: Stack, token: str, files: dict[str, bytes]) -> str:
    assert stack.http is not None
    r = stack.http.post("/bundles", content=tar_bytes(files), headers={"Authorization": f"Bearer {token}"})
    assert r.status_code in (200, 201), r.text
    return str(r.json()["sha256"])


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped-account", "default-account"])
def test_a_hostile_command_finds_nothing(iso_stack: Stack, accounts: dict[str, str], mapped: bool) -> None:
    stack = iso_stack
    member = f"m{free_port()}"
    token = token_of(stack, member, accounts["alice"] if mapped else None)
    # Another member's job, running meanwhile, with a secret in its folder; and a finished job's artifact.
    bob = f"b{free_port()}"
    bob_token = token_of(stack, bob, None)
    stack.gpulab("users", "set", bob, "--unix-user", accounts["bob"])  # mapped after the fact
    secret = upload(stack, bob_token, {"secret.txt": b"bob's secret"})
    earlier = stack.submit("command", {"argv": ["bash", "-c", "echo weights > model.pt"]}, token=bob_token)
    assert stack.wait_for(earlier["id"])["status"] == "succeeded"
    sleeper = stack.submit("command", {"argv": ["sleep", "60"], "bundle": secret}, token=bob_token)
    # And an unmapped member's: unmapped members each have an account of their own.
    carol_token = token_of(stack, f"c{free_port()}", None)
    carol_secret = upload(stack, carol_token, {"secret.txt": b"carol's secret"})
    carol_sleeper = stack.submit("command", {"argv": ["sleep", "60"], "bundle": carol_secret}, token=carol_token)
    # A token file left readable: gpulab tightens it before any command runs.
    token_file = stack.state_dir / "token"
    token_file.write_text(stack.token + "\n")
    token_file.chmod(0o644)
    database = stack.env["GPULAB_DATABASE_URL"].split("///", 1)[1]
    targets = {
        "files": {"database": database, "database wal": database + "-wal", "token file": str(token_file),
                  "earlier job's artifact": str(stack.state_dir / "artifacts" / str(earlier["id"]) / "model.pt")},
        "folders": {"state dir": str(stack.state_dir), "runs": str(stack.state_dir / "runs"),
                    "bundles": str(stack.state_dir / "bundles"), "artifacts": str(stack.state_dir / "artifacts")},
    }
    for job in (sleeper, carol_sleeper):
        stack.wait_for(job["id"], ("running",))
    runs = stack.state_dir / "runs" / stack.installation
    targets["files"]["other job's file"] = f"{runs}-{sleeper['id']}-1/work/secret.txt"
    targets["files"]["unmapped member's file"] = f"{runs}-{carol_sleeper['id']}-1/work/secret.txt"
    # The files exist before the probe runs: a denial is a denial, not a file not made yet.
    stack.wait(lambda: all(Path(targets["files"][k]).exists() for k in ("other job's file", "unmapped member's file")),
               30, "the other jobs' run folders")
    hostile = upload(stack, token, {"hostile.py": HOSTILE.encode()})
    job = stack.submit("command", {"argv": ["/usr/bin/python3", "hostile.py", json.dumps(targets)],
                                   "bundle": hostile}, token=token)
    done = stack.wait_for(job["id"])
    for job in (sleeper, carol_sleeper):
        stack.api("POST", f"/jobs/{job['id']}/cancel")
    assert done["status"] == "succeeded", done["error"]
    found = done["result"]["found"]
    expected_account = accounts["alice"] if mapped else f"gpulab-{member}"
    assert done["result"]["unix_user"] == expected_account
    assert found.pop("uid") != 0
    assert found.pop("environ of service processes") == "none readable"
    assert found.pop("own environment") == "clean"
    assert {k: v for k, v in found.items() if not v.startswith("denied")} == {}, found
    # It could not read them, yet they exist: the probes were real.
    assert Path(targets["files"]["database"]).exists() and token_file.exists()
    assert Path(targets["files"]["earlier job's artifact"]).exists()
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    for job in (sleeper, carol_sleeper):
        stack.wait_for(job["id"])


def test_members_map_to_accounts_through_the_api(iso_stack: Stack, accounts: dict[str, str]) -> None:
    name = f"c{free_port()}"
    iso_stack.api("POST", "/users", json={"name": name})
    changed = iso_stack.api("PATCH", f"/users/{name}", json={"unix_user": accounts["bob"]})
    assert changed["unix_user"] == accounts["bob"]
    r = iso_stack.api("PATCH", f"/users/{name}", json={"unix_user": "root"}, expect=422)
    assert r["field"] == "unix_user" and "never run as root" in r["detail"]
    assert iso_stack.api("PATCH", f"/users/{name}", json={"unix_user": None})["unix_user"] is None


def test_a_command_runs_in_place_only_in_an_allowed_server_folder(iso_stack: Stack, shared: Path) -> None:
    project = shared / f"p{free_port()}"
    project.mkdir()
    (project / "data.txt").write_text("41\n")
    project.chmod(0o777)  # the lab's shared folder: the default account may write here
    job = iso_stack.submit("command", {"server_dir": str(project), "argv": [
        "bash", "-c", 'echo $(( $(cat data.txt) + 1 )) > "$GPULAB_OUTPUT_DIR/answer.txt"; echo x > left-here.txt']})
    done = iso_stack.wait_for(job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["outputs"] == ["answer.txt"]  # a server folder is not harvested
    assert (project / "left-here.txt").exists()
    r = iso_stack.api("POST", "/jobs", expect=422, json={"kind": "command", "params": {
        "server_dir": "/etc", "argv": ["true"]}})
    assert r["field"] == "params.server_dir" and str(shared) in r["detail"]
