"""The command kind's parts, called directly: params, output reading, the environment, outputs, stopping."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs import gpulab_report
from jobs.command import Params
from jobs.context import LocalContext
from service.settings import Settings
from worker.command import Stopper
from worker.command_account import Account
from worker.command_env import build_env
from worker.command_files import RunFolder, collect_outputs, snapshot
from worker.command_output import OutputReader
from worker.device import DeviceInfo

CPU = DeviceInfo(id="h/cpu", host="h", kind="cpu", index=None, name="cpu", uuid=None, memory_total_mb=None)
GPU = DeviceInfo(id="h/cuda:1", host="h", kind="cuda", index=1, name="H200", uuid="GPU-1234", memory_total_mb=1)


# -- params ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["GPULAB_DATABASE_URL", "gpulab_token", "LD_PRELOAD", "LD_LIBRARY_PATH",
                                  "CUDA_VISIBLE_DEVICES", "PYTHONSTARTUP", "HOME", "9LIVES", "A-B"])
def test_env_names_that_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match=name):
        Params(argv=["true"], env={name: "x"})


def test_an_env_value_that_is_the_mask_is_refused_and_named() -> None:
    with pytest.raises(ValidationError) as refused:
        Params(argv=["true"], env={"OK": "**", "WANDB_API_KEY": "***"})
    [error] = refused.value.errors()
    assert error["loc"] == ("env", "WANDB_API_KEY") and error["input"] == "***"
    assert Params(argv=["true"], env={"A": "*** ", "B": "x***"}).env == {"A": "*** ", "B": "x***"}


def test_params_accept_a_plain_command() -> None:
    p = Params(argv=["python", "train.py", "--lr", "0.1"], env={"WANDB_MODE": "offline", "PYTHONPATH": "src"})
    assert p.requeue is False and p.bundle is None
    for bad in ({"argv": []}, {"argv": [""]}, {"argv": ["a\0b"]}, {"argv": ["x"], "bundle": "../etc"},
                {"argv": ["x"], "shell": True}):
        with pytest.raises(ValidationError):
            Params.model_validate(bad)


# -- output ------------------------------------------------------------------------------------

def test_reports_bars_and_lines(tmp_path: Path) -> None:
    ctx = LocalContext(artifacts_root=tmp_path)
    reader = OutputReader(ctx)
    stream = (b"epoch 1\n"
              b"\rtrain:  10%|#         | 1/10 [00:00<00:01]"
              b'GPULAB {"metric": {"name": "loss", "value": 0.5, "step": 1}}\n'
              b"\rtrain: 100%|##########| 10/10 [00:01<00:00]\n"
              b'GPULAB {"result": {"acc": 0.9}}\r\n'
              b'GPULAB {"artifact": {"path": "plots/a.png", "name": null}}\n'
              b"GPULAB not json\n"
              b"half a li")
    for i in range(0, len(stream), 7):  # any split of the bytes reads the same
        reader.feed(stream[i:i + 7])
    reader.feed(b"ne")
    reader.close()
    assert ctx.recorded.progress[0] == (1, 10) and ctx.recorded.progress[-1] == (10, 10)
    assert ctx.recorded.metrics == [("loss", 0.5, 1)]
    assert reader.result == {"acc": 0.9} and reader.artifacts == [("plots/a.png", None)]
    assert ctx.recorded.logs == ["epoch 1", "train: 100%|##########| 10/10 [00:01<00:00]", "GPULAB not json",
                                 "half a line"]
    assert not reader.oom


def test_output_after_a_bar_left_mid_redraw_is_a_line_of_its_own(tmp_path: Path) -> None:
    # A stop between a bar's redraw (stderr, no newline) and the next report leaves the bar
    # unfinished, and the program's "interrupted" line (stdout) lands right after it.
    ctx = LocalContext(artifacts_root=tmp_path)
    reader = OutputReader(ctx)
    reader.feed(b"\rtrain:   0%|          | 13/100000 [00:00<00:00, 9.1it/s, loss=0.3]interrupted at step 13\n")
    reader.close()
    assert ctx.recorded.logs == ["interrupted at step 13"]
    assert ctx.recorded.progress == [(13, 100000)]


def test_cuda_out_of_memory_is_noticed(tmp_path: Path) -> None:
    reader = OutputReader(LocalContext(artifacts_root=tmp_path))
    reader.feed(b"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB\n")
    assert reader.oom


def test_a_report_is_one_write_so_ranks_sharing_the_pipe_cannot_split_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # torchrun starts ranks with -u: each write() is a syscall of its own, and the ranks share the
    # job's one pipe. A report written in two pieces (print's text, then its newline) could get
    # another rank's line between them; one whole line per write cannot (a pipe write up to
    # PIPE_BUF is atomic).
    class Writes:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def write(self, text: str) -> int:
            self.calls.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    writes = Writes()
    monkeypatch.setattr(sys, "stdout", writes)
    gpulab_report.result({"all_reduce": 3.0})
    gpulab_report.metric("loss", 0.5, 1)
    assert len(writes.calls) == 2 and all(c.startswith("GPULAB {") and c.endswith("}\n") for c in writes.calls)
    # Another rank's unfinished line before a report still leaves both readable.
    ctx = LocalContext(artifacts_root=tmp_path)
    reader = OutputReader(ctx)
    reader.feed(b"rank 1 of 2: all_reduce=3" + writes.calls[0].encode() + b"\n")
    reader.close()
    assert reader.result == {"all_reduce": 3.0} and ctx.recorded.logs == ["rank 1 of 2: all_reduce=3"]


# -- environment -------------------------------------------------------------------------------

def folder_in(tmp_path: Path) -> RunFolder:
    parts = {name: tmp_path / name for name in ("work", "output", "tmp", "home")}
    for path in parts.values():
        path.mkdir(parents=True)
    return RunFolder(root=tmp_path, **parts)


def test_the_environment_is_built_from_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPULAB_DATABASE_URL", "postgresql://secret@db/gpulab")
    monkeypatch.setenv("GPULAB_REDIS_URL", "redis://secret@redis:6379/0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-only")
    settings = Settings(state_dir=tmp_path, torch_threads=3)
    account = Account("alice", 1001, 1001, (1001,), "/nonexistent", switch=True)
    env = build_env(settings=settings, device=GPU, account=account, folder=folder_in(tmp_path), lib=tmp_path / "lib",
                    prefix=Path("/opt/envs/torch"), job_id=12, attempt=2, seed=7,
                    member_env={"PYTHONPATH": "src", "RUN": "a"})
    assert "secret" not in str(env) and "worker-only" not in str(env)
    assert not [k for k in env if k.startswith("GPULAB_") and k not in
                ("GPULAB_JOB_ID", "GPULAB_ATTEMPT", "GPULAB_SEED", "GPULAB_OUTPUT_DIR", "GPULAB_DEVICE", "GPULAB_GPUS")]
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-1234" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["PATH"].startswith("/opt/envs/torch/bin:")
    assert env["HOME"] == str(tmp_path / "home")  # the account has no home folder here
    assert (env["GPULAB_JOB_ID"], env["GPULAB_ATTEMPT"], env["GPULAB_SEED"]) == ("12", "2", "7")
    assert env["OMP_NUM_THREADS"] == "3" and int(env["MASTER_PORT"]) > 0 and env["GPULAB_GPUS"] == "1"
    assert env["PYTHONPATH"] == f"src:{tmp_path / 'lib'}" and env["RUN"] == "a"
    cpu = build_env(settings=settings, device=CPU, account=account, folder=folder_in(tmp_path / "b"),
                    lib=tmp_path, prefix=Path(sys.prefix), job_id=1, attempt=1, seed=0, member_env={})
    assert cpu["CUDA_VISIBLE_DEVICES"] == ""  # a CPU job sees no GPU at all


# -- outputs -----------------------------------------------------------------------------------

def test_outputs_are_new_or_changed_files_never_links(tmp_path: Path) -> None:
    folder = folder_in(tmp_path / "run")
    (folder.work / "train.py").write_text("unchanged")
    (folder.work / "data.csv").write_text("1")
    before = snapshot(folder.work)
    time.sleep(0.01)
    (folder.work / "data.csv").write_text("12")  # changed
    (folder.work / "model.pt").write_bytes(b"weights")
    (folder.work / "ckpt").mkdir()
    (folder.work / "ckpt" / "last.pt").write_bytes(b"last")
    (folder.work / "__pycache__").mkdir()
    (folder.work / "__pycache__" / "x.pyc").write_bytes(b"\0")
    secret = tmp_path / "secret.txt"
    secret.write_text("not the job's")
    (folder.work / "stolen.txt").symlink_to(secret)
    (folder.work / "outside").symlink_to(tmp_path, target_is_directory=True)
    (folder.output / "curve.png").write_bytes(b"png")
    (folder.work / "has space.txt").write_text("x")
    os.link(secret, folder.work / "hard.txt")  # root may read what the link names; the job may not
    os.mkfifo(folder.work / "pipe")
    ctx = LocalContext(artifacts_root=tmp_path / "artifacts", job_id=5)
    harvest = collect_outputs(folder, before, ctx, limit_bytes=2**20)
    kept = dict(harvest.kept)
    assert kept == {"curve.png": 3, "ckpt__last.pt": 4, "data.csv": 2, "model.pt": 7}
    assert (tmp_path / "artifacts" / "5" / "ckpt__last.pt").read_bytes() == b"last"
    assert any("has space.txt" in s for s in harvest.skipped)
    assert "hard.txt (a hard link)" in harvest.skipped
    assert not any("secret" in name or "stolen" in name for name in kept)


def test_outputs_past_the_cap_are_skipped_and_said(tmp_path: Path) -> None:
    folder = folder_in(tmp_path / "run")
    before = snapshot(folder.work)
    (folder.work / "small.bin").write_bytes(b"x" * 100)
    (folder.work / "big.bin").write_bytes(b"x" * 5000)
    harvest = collect_outputs(folder, before, LocalContext(artifacts_root=tmp_path / "a", job_id=1), limit_bytes=1000)
    assert [n for n, _ in harvest.kept] == ["small.bin"]
    assert harvest.skipped == ["big.bin (5000 B: past the job's output limit, GPULAB_MAX_OUTPUT_MB)"]


def test_requested_artifacts_must_lie_inside(tmp_path: Path) -> None:
    folder = folder_in(tmp_path / "run")
    (folder.work / "plots").mkdir()
    (folder.work / "plots" / "a.png").write_bytes(b"a")
    before = snapshot(folder.work)  # unchanged, yet asked for by name
    harvest = collect_outputs(folder, before, LocalContext(artifacts_root=tmp_path / "a", job_id=1),
                              limit_bytes=2**20, requested=[("plots/a.png", "curve.png"), ("/etc/passwd", None),
                                                            ("../../x", None)])
    assert dict(harvest.kept) == {"curve.png": 1}
    assert len(harvest.skipped) == 2


# -- stopping ----------------------------------------------------------------------------------

def test_the_stop_reaches_the_interrupt_handler_then_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
                                  "signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        try:
            # Named only once inside the try: a SIGINT before it would end this process unsaved.
            with open({str(pidfile)!r} + ".part", "w") as f:
                f.write(str(child.pid))
            os.replace({str(pidfile)!r} + ".part", {str(pidfile)!r})
            time.sleep(60)
        except KeyboardInterrupt:
            open({str(tmp_path / 'saved')!r}, "w").write("checkpoint")
            time.sleep(60)  # and then hangs: SIGTERM ends it
    """)
    # As start_command starts a command: SIGINT at its default whatever this process inherited. A
    # suite run from a background shell (`.ci/run &`) ignores SIGINT, an ignored signal stays
    # ignored across exec, and Python then raises no KeyboardInterrupt: nothing would be saved.
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Bounds, not waits: a Python start took seconds on the busy 2-core machine.
    deadline = time.monotonic() + 60
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pidfile.exists(), "the job's process never started its child"
    deadline = time.monotonic() + 30
    stopper = Stopper(proc.pid, grace_s=2.0)
    stopper.begin("cancel")
    while proc.poll() is None and time.monotonic() < deadline:
        stopper.tick()
        time.sleep(0.05)
    assert (tmp_path / "saved").read_text() == "checkpoint"
    assert proc.returncode == -signal.SIGTERM
    child = int(pidfile.read_text())
    while time.monotonic() < deadline and not stopper_done(stopper):
        stopper.tick()
        time.sleep(0.05)
    assert not alive(child), "a child that ignores SIGINT and SIGTERM outlived the SIGKILL"


def stopper_done(stopper: Stopper) -> bool:
    return not stopper.steps


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- accounts ----------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="resolving other accounts is a root worker's job")
def test_accounts_are_never_root(tmp_path: Path) -> None:
    from jobs.base import JobError
    from worker.command_account import resolve_account

    settings = Settings(state_dir=tmp_path, command_user="nobody")
    shared = resolve_account(settings, None, member_id=1, member="ann")
    assert shared.name == "nobody" and shared.uid != 0
    with pytest.raises(JobError, match="does not exist"):
        resolve_account(settings, "no-such-account-here", member_id=1, member="ann")
    with pytest.raises(JobError, match="never run as root"):
        resolve_account(settings, "root", member_id=1, member="ann")
    with pytest.raises(ValueError, match="never run as root"):
        Settings(state_dir=tmp_path, command_user="root")


@pytest.mark.skipif(os.geteuid() != 0, reason="resolving other accounts is a root worker's job")
def test_unmapped_members_each_get_an_account_of_their_own(tmp_path: Path) -> None:
    from jobs.base import JobError
    from worker.command_account import resolve_account

    settings = Settings(state_dir=tmp_path)
    ann = resolve_account(settings, None, member_id=7, member="ann")
    ben = resolve_account(settings, None, member_id=8, member="ben")
    assert (ann.name, ann.uid, ann.gid, ann.groups) == ("gpulab-ann", settings.command_uid_base + 7,
                                                        settings.command_uid_base + 7, ())
    assert ben.uid == ann.uid + 1 and ben.switch
    # A base that lands on a real account is refused, naming the setting, never shared silently.
    taken = Settings(state_dir=tmp_path, command_uid_base=65534 - 3)
    with pytest.raises(JobError, match="belongs to the account 'nobody'.*GPULAB_COMMAND_UID_BASE"):
        resolve_account(taken, None, member_id=3, member="cy")


def test_a_broker_or_database_without_a_password_is_named_where_commands_run(tmp_path: Path) -> None:
    """A command job has the machine's network: a Redis or PostgreSQL that asks no password is
    one it can log in to as the service, so a worker that runs commands says which."""
    from worker.command_account import open_doors

    bare = Settings(state_dir=tmp_path, redis_url="redis://10.0.0.5:6380/0",
                    database_url="postgresql+psycopg://gpulab@db.lab:5432/gpulab")
    doors = open_doors(bare)
    assert len(doors) == 2, doors
    assert "broker at 10.0.0.5:6380 asks for no password" in doors[0] and "GPULAB_REDIS_URL" in doors[0]
    assert "database at db.lab:5432" in doors[1] and "GPULAB_DATABASE_URL" in doors[1]
    locked = Settings(state_dir=tmp_path, redis_url="redis://:s3cret@10.0.0.5:6380/0",
                      database_url="postgresql+psycopg://gpulab:pw@db.lab/gpulab")
    assert open_doors(locked) == []
    # A SQLite file is kept from jobs by its folder's mode (secure_state), a socket by its own.
    assert open_doors(Settings(state_dir=tmp_path, redis_url="unix:///run/redis.sock")) == []
    assert all("s3cret" not in d for d in open_doors(Settings(state_dir=tmp_path, redis_url="redis://:s3cret@h/0",
                                                               database_url="postgresql://u@h/db")))



@pytest.mark.skipif(os.geteuid() != 0, reason="a root worker's announcement")
def test_a_root_worker_that_runs_commands_warns_of_an_open_broker(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from worker.command_account import announce

    with caplog.at_level(logging.WARNING, logger="gpulab.worker"):
        announce(Settings(state_dir=tmp_path, enable_command_kind=True, redis_url="redis://127.0.0.1:6379/0"))
        announce(Settings(state_dir=tmp_path, enable_command_kind=False, redis_url="redis://127.0.0.1:6379/0"))
    broker = [r for r in caplog.records if "broker" in r.getMessage()]
    assert [r.getMessage().split(":")[0] for r in broker] == ["the broker at 127.0.0.1"], caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="starts a process as nobody")
def test_a_worker_that_is_not_root_runs_commands_as_itself_and_says_so(tmp_path: Path) -> None:
    from tests.support.commands import lab_python_env, reachable_dir

    where = reachable_dir("gpulab-nonroot-")
    try:
        python = lab_python_env(where) / "bin" / "python"
        state = where / "state"
        state.mkdir()
        os.chown(state, 65534, 65534)
        repo = Path(__file__).resolve().parents[2]
        code = (f"import logging, sys; sys.path.insert(0, {str(repo)!r}); logging.basicConfig(level=logging.INFO); "
                "from service.settings import Settings; "
                "from worker.command_account import announce, resolve_account; "
                f"s = Settings(state_dir={str(state)!r}); announce(s); "
                "print(resolve_account(s, 'alice', member_id=1, member='alice').describe())")
        out = subprocess.run([str(python), "-c", code], user=65534, group=65534, capture_output=True, text=True,
                             cwd=str(where), timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "nobody (uid 65534), the worker's own account"
        assert "this worker is not root" in out.stderr and "can read whatever it can" in out.stderr
    finally:
        import shutil

        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="a root worker's check")
def test_a_runs_folder_the_accounts_cannot_reach_is_named() -> None:
    import shutil

    from jobs.base import JobError
    from tests.support.commands import reachable_dir
    from worker.command_files import make_run_folder

    base = reachable_dir("gpulab-closed-")
    try:
        closed = base / "closed"  # like a state dir under /root
        closed.mkdir(mode=0o700)
        settings = Settings(state_dir=base, runs_dir=closed / "runs")
        account = Account("nobody", 65534, 65534, (65534,), "/", switch=True)
        with pytest.raises(JobError, match=f"{closed} is closed to other accounts.*GPULAB_RUNS_DIR"):
            make_run_folder(settings, 1, 1, account)
        closed.chmod(0o711)
        (closed / "runs").mkdir()
        assert make_run_folder(settings, 1, 1, account).work.is_dir()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_interpreter_the_account_cannot_reach_names_the_closed_folder() -> None:
    """An interpreter under a private folder (pyenv under /root) is named, with what to do."""
    import tempfile

    from worker.command_account import first_closed_folder

    # Outside pytest's own temp root, which is private to root itself.
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        base = Path(top)
        base.chmod(0o755)
        closed = base / "private"
        (closed / "bin").mkdir(parents=True)
        program = closed / "bin" / "python3"
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
        link = base / "python"
        link.symlink_to(program)
        stranger = Account("nobody", 65534, 65534, (65534,), "/", switch=True)
        closed.chmod(0o700)
        assert first_closed_folder(stranger, link) == closed
        closed.chmod(0o711)
        assert first_closed_folder(stranger, link) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="a root worker's check")
def test_requirements_on_an_interpreter_the_account_cannot_reach_fail_in_one_line() -> None:
    """A requirements.txt on the worker's own pyenv interpreter: the closed folder and what to do, no traceback."""
    import shutil

    from tests.support.commands import reachable_dir
    from worker.command_venv import EnvBuildFailed, venv_for

    base = reachable_dir("gpulab-venv-")
    try:
        closed = base / "private"  # like /root, where pyenv lives
        (closed / "env" / "bin").mkdir(parents=True)
        (closed / "env" / "bin" / "python").write_text("#!/bin/sh\n")
        (closed / "env" / "bin" / "python").chmod(0o755)
        closed.chmod(0o700)
        (base / "requirements.txt").write_text("tqdm\n")
        settings = Settings(state_dir=base, runs_dir=base / "runs")
        (base / "runs").mkdir(mode=0o711)
        stranger = Account("nobody", 65534, 65534, (65534,), "/", switch=True)
        with pytest.raises(EnvBuildFailed, match=f"as nobody: .* lies under {closed}, .*--python-env NAME$"):
            venv_for(settings=settings, account=stranger, prefix=closed / "env", requirements=base / "requirements.txt",
                     env={}, ctx=LocalContext(artifacts_root=base))
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(("name", "expected"), [
    ("model.pt", "application/octet-stream"), ("ckpt.PTH", "application/octet-stream"),
    ("fit.png", "image/png"), ("odd.unknownext", "application/octet-stream")])
def test_checkpoints_are_plain_bytes_not_what_the_mime_table_guesses(name: str, expected: str) -> None:
    from jobs.context import guess_content_type

    assert guess_content_type(name) == expected


def test_cached_venvs_unused_for_longer_than_any_job_runs_are_pruned(tmp_path: Path) -> None:
    from worker.command_venv import COMPLETE, VENVS_DIR, prune_venvs

    settings = Settings(state_dir=tmp_path)
    root = settings.runs_root / VENVS_DIR
    now = time.time()
    keep_s = max(settings.bundle_keep_s, settings.max_timeout_s) + 86400
    for name, age in (("1-old", keep_s + 60), ("1-recent", keep_s - 60), ("2-half-built", keep_s + 60)):
        (root / name).mkdir(parents=True)
        marker = root / name / (COMPLETE if name != "2-half-built" else "bin")
        marker.touch()
        os.utime(marker, (now - age, now - age))
        os.utime(root / name, (now - age, now - age))
    assert prune_venvs(settings, now=now) == 2
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["1-recent"]


@pytest.mark.skipif(os.geteuid() != 0, reason="a root worker's check")
def test_a_closed_runs_folder_is_warned_of_only_where_command_jobs_may_run(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    from worker.command_account import announce

    closed = tmp_path / "home"  # like /root: pytest's tmp is 0700 above it too
    closed.mkdir(mode=0o700)
    for enabled in (False, True):
        caplog.clear()
        with caplog.at_level("WARNING", logger="gpulab"):
            announce(Settings(state_dir=closed / "state", enable_command_kind=enabled))
        assert ("is closed to other accounts" in caplog.text) is enabled, caplog.text
