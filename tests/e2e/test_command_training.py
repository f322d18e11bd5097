"""A member's own training program, uploaded from a folder with the CLI and run as a command job.

It parses arguments, reads its data by a relative path, reports a loss with gpulab_report,
draws a progress bar (tqdm's format) and saves a checkpoint with torch.save; the checkpoint
comes back with `gpulab get`. A cancel reaches its KeyboardInterrupt handler, and what it
saved then is collected too.
"""

from __future__ import annotations

import io
import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.support.commands import command_stack, with_lab_env
from tests.support.stack import Stack

TRAIN = textwrap.dedent('''
    import argparse, sys, time
    import torch
    import gpulab_report

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="./data/points.csv")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--out", default="model.pt")
    args = parser.parse_args()

    rows = [tuple(map(float, line.split(","))) for line in open(args.data).read().split()]
    x = torch.tensor([[a] for a, _ in rows])
    y = torch.tensor([[b] for _, b in rows])
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def bar(i, n):
        # tqdm's own line format, redrawn with \\r (tqdm itself is not installed here)
        sys.stderr.write(f"\\rtrain: {100 * i // n:3d}%|{'#' * (10 * i // n):10s}| {i}/{n} [00:00<00:00]")
        sys.stderr.flush()

    step = 0
    try:
        for step in range(1, args.steps + 1):
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar(step, args.steps)
            gpulab_report.metric("loss", loss.item(), step)
            time.sleep(args.sleep)
        sys.stderr.write("\\n")
        torch.save({"model": model.state_dict(), "step": step}, args.out)
        gpulab_report.result({"final_loss": loss.item()})
        print("done after", step, "steps")
    except KeyboardInterrupt:
        torch.save({"model": model.state_dict(), "step": step}, "interrupted.pt")
        print("interrupted at step", step, flush=True)
        sys.exit(130)
''')


@pytest.fixture(scope="module")
def cmd_stack() -> Iterator[Stack]:
    # A grace long enough for SIGINT → SIGTERM → SIGKILL before the worker kills its child.
    for stack in command_stack("sqlite", env={"GPULAB_CANCEL_GRACE_S": "15"}):
        with_lab_env(stack)
        yield stack


def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    # y = 2x + 1: a linear model fits it exactly.
    (root / "data" / "points.csv").write_text("\n".join(f"{x / 10},{2 * x / 10 + 1}" for x in range(-10, 11)))
    (root / ".gitignore").write_text("runs/\n*.log\n")
    (root / "runs").mkdir()
    (root / "runs" / "old.ckpt").write_bytes(b"x" * 1000)
    (root / "notes.log").write_text("not packed")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (root / ".venv").mkdir()
    (root / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    return root


def cli(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return stack.gpulab(*args, env={"GPULAB_TOKEN": stack.token}, check=check)


def test_training_program_runs_and_its_checkpoint_comes_back(cmd_stack: Stack, tmp_path: Path) -> None:
    root = project(tmp_path)
    done = cli(cmd_stack, "submit", "--working-dir", str(root), "--env", "RUN_NAME=first", "--json",
               "--python-env", "lab", "--", "python", "train.py", "--steps", "40")
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded", (job, done.stderr)
    # train.py, the data and .gitignore: not runs/, *.log, __pycache__ or the venv.
    assert "3 files" in done.stderr, done.stderr
    result = job["result"]
    assert result["exit_code"] == 0 and result["unix_user"] == "gpulab-admin"  # unmapped: its own account
    assert result["bundle"]["files"] == 3 and result["outputs"] == ["model.pt"]
    assert result["final_loss"] < 0.05
    # The tqdm-style bar became the job's progress, its last step is 40 of 40.
    progress = cmd_stack.api("GET", f"/jobs/{job['id']}/events", params={"type": "progress"})["items"]
    assert progress and progress[-1]["data"] == {"step": 40, "total": 40}
    assert len(cmd_stack.api("GET", f"/jobs/{job['id']}/metrics")) == 40
    shown = cmd_stack.api("GET", f"/jobs/{job['id']}")["command"]
    assert shown["argv"] == ["python", "train.py", "--steps", "40"] and shown["env"] == {"RUN_NAME": "first"}
    assert (shown["unix_user"], shown["python_env"], shown["bundle"]["files"]) == ("gpulab-admin", "lab", 3)
    summary = cli(cmd_stack, "show", str(job["id"])).stdout
    for text in ("python train.py --steps 40", "gpulab-admin", "3 files", "RUN_NAME", "lab"):
        assert text in summary, summary
    dest = tmp_path / "back.pt"
    cli(cmd_stack, "get", str(job["id"]), "model.pt", "-o", str(dest))
    state = torch.load(dest, weights_only=True)
    assert state["step"] == 40
    assert state["model"]["weight"].item() == pytest.approx(2.0, abs=0.2)
    # The same folder again: the server has the bundle, nothing is uploaded.
    again = cli(cmd_stack, "submit", "--working-dir", str(root), "--no-wait", "--python-env", "lab",
                "--", "python", "train.py")
    assert "uploading" not in again.stderr
    second = cmd_stack.api("GET", f"/jobs/{again.stdout.strip()}")
    assert second["params"]["bundle"] == result["bundle"]["sha256"]
    cmd_stack.wait_for(int(again.stdout.strip()))


def test_cancel_reaches_the_programs_interrupt_handler(cmd_stack: Stack, tmp_path: Path) -> None:
    root = project(tmp_path)
    job_id = int(cli(cmd_stack, "submit", "--working-dir", str(root), "--no-wait", "--python-env", "lab",
                     "--", "python", "train.py", "--steps", "100000", "--sleep", "0.05").stdout.strip())

    def started() -> bool:
        items = cmd_stack.api("GET", f"/jobs/{job_id}/events", params={"type": "progress"})["items"]
        return bool(items)

    cmd_stack.wait(started, 60, f"job {job_id} to report progress")
    assert "the command gets SIGINT now" in cli(cmd_stack, "cancel", str(job_id)).stdout
    done = cmd_stack.wait_for(job_id, timeout=60)
    assert done["status"] == "cancelled", done
    assert done["error"] == "stopped after a cancel", done
    assert done["result"]["stopped_early"] is True and done["result"]["exit_code"] == 130
    names = [a["name"] for a in cmd_stack.api("GET", f"/jobs/{job_id}/artifacts")]
    assert names == ["interrupted.pt"]
    logs = [e["message"] for e in cmd_stack.api("GET", f"/jobs/{job_id}/events", params={"type": "log"})["items"]]
    assert any(m.startswith("interrupted at step") for m in logs), logs


def test_a_failing_command_fails_with_its_code_and_last_lines(cmd_stack: Stack, tmp_path: Path) -> None:
    job = json.loads(cli(cmd_stack, "submit", "--json", "--", "bash", "-c", "echo about to fail; exit 3",
                         check=False).stdout)
    assert (job["status"], job["reason"]) == ("failed", "user_error")
    assert "exited with code 3" in job["error"] and "about to fail" in job["error"]
    oom = json.loads(cli(cmd_stack, "submit", "--json", "--", "bash", "-c",
                         "echo 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB'; exit 1",
                         check=False).stdout)
    assert (oom["status"], oom["reason"]) == ("failed", "oom")
    missing = json.loads(cli(cmd_stack, "submit", "--json", "--", "no-such-program", check=False).stdout)
    assert missing["reason"] == "user_error" and "cannot start 'no-such-program'" in missing["error"]


def test_a_p_param_reaches_a_command_job_and_command_options_need_a_command(cmd_stack: Stack) -> None:
    """`-p server_dir=...` was dropped without a word; --working-dir with a kind was ignored too."""
    in_place = cli(cmd_stack, "submit", "-p", "server_dir=/srv/elsewhere", "--", "true", check=False)
    assert in_place.returncode == 2 and "params.server_dir" in in_place.stderr, in_place.stderr
    clash = cli(cmd_stack, "submit", "-p", "env={}", "--", "true", check=False)
    assert clash.returncode == 2 and "-p env: a command job takes it from the command line" in clash.stderr
    stray = cli(cmd_stack, "submit", "--working-dir", ".", "regression", check=False)
    assert stray.returncode == 2 and "put the command after --" in stray.stderr, stray.stderr


def test_the_time_limit_interrupts_and_what_it_saved_is_kept(cmd_stack: Stack) -> None:
    code = textwrap.dedent("""
        import time
        try:
            while True:
                time.sleep(0.05)
        except KeyboardInterrupt:
            open("partial.txt", "w").write("saved at the limit")
            raise SystemExit(1)
    """)
    job = cmd_stack.submit("command", {"argv": ["/usr/bin/python3", "-c", code]}, timeout_s=3)
    done = cmd_stack.wait_for(job["id"], timeout=60)
    assert (done["status"], done["reason"]) == ("failed", "timeout"), done
    names = [a["name"] for a in cmd_stack.api("GET", f"/jobs/{job['id']}/artifacts")]
    assert names == ["partial.txt"]


def test_a_command_is_rerun_after_worker_loss_only_if_it_asked(cmd_stack: Stack) -> None:
    device = cmd_stack.add_worker("cpu", host="doomed", slots=2)
    once = cmd_stack.submit("command", {"argv": ["sleep", "600"]}, device=device)
    again = cmd_stack.submit("command", {"argv": ["sleep", "600"], "requeue": True}, device=device)
    assert (once["max_attempts"], again["max_attempts"]) == (1, 3)
    cmd_stack.wait_for(once["id"], ("running",))
    cmd_stack.wait_for(again["id"], ("running",))
    runs = cmd_stack.state_dir / "runs"
    left = [runs / f"{cmd_stack.installation}-{job['id']}-1" for job in (once, again)]
    cmd_stack.wait(lambda: all(folder.is_dir() for folder in left), 30, "the commands' run folders")
    cmd_stack.kill(f"worker-{device}")  # the worker and its commands are gone
    lost = cmd_stack.wait_for(once["id"], timeout=60)
    assert (lost["status"], lost["reason"]) == ("failed", "worker_lost")
    # The one that asked is waiting to run again (its device is gone, so it waits).
    cmd_stack.wait_for(again["id"], ("pending",), timeout=60)
    assert cmd_stack.job(again["id"])["runs"] == 1
    cmd_stack.api("POST", f"/jobs/{again['id']}/cancel")
    # The killed worker never removed their run folders; its device's next worker does.
    assert all(folder.is_dir() for folder in left)
    cmd_stack.add_worker("cpu", host="doomed", slots=2)
    assert not any(folder.exists() for folder in left)


def test_scripted_submission_from_python(cmd_stack: Stack, tmp_path: Path) -> None:
    from cli.bundles import submit_command
    from cli.client import Api
    from service.settings import Settings

    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "input.txt").write_text("3\n")
    api = Api(Settings(api_url=cmd_stack.url), token=cmd_stack.token)
    job = submit_command(api, ["bash", "-c", 'echo $(( $(cat input.txt) * GPULAB_SEED )) > "$GPULAB_OUTPUT_DIR/x.txt"'],
                         working_dir=tmp_path / "job", seed=7)
    done = cmd_stack.wait_for(job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["outputs"] == ["x.txt"]
    assert cmd_stack.api("GET", f"/jobs/{job['id']}/artifacts/x.txt").text == "21\n"


def test_every_line_of_a_fast_printer_is_kept(cmd_stack: Stack) -> None:
    """A command that prints faster than its lines are stored: it waits on its pipe (the worker
    reads only a little ahead), and what was still unread when it exited is kept. Before, the
    worker held the whole flood in memory and dropped what it had not stored 2 s after the exit."""
    lines = 300_000
    job = cmd_stack.submit("command", {"argv": ["seq", "1", str(lines)]}, device="cpu")
    done = cmd_stack.wait_for(job["id"], timeout=240)
    assert done["status"] == "succeeded", done
    tail = cmd_stack.api("GET", f"/jobs/{job['id']}/log", params={"limit": 5})["items"]
    assert str(lines) in [e["message"] for e in tail], tail
    first = cmd_stack.api("GET", f"/jobs/{job['id']}/events", params={"type": "log", "limit": 3})["items"]
    assert [e["message"] for e in first][1:3] == ["1", "2"], first


def test_a_command_sweep_fills_its_placeholders_from_one_upload(cmd_stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "base.txt").write_text("x")
    script = 'echo {word}{n} $(cat base.txt) > "$GPULAB_OUTPUT_DIR/out.txt"'
    result = cli(cmd_stack, "submit", "--working-dir", str(tmp_path / "job"), "--sweep", "word=a,b",
                 "--sweep", "n=1,2", "--", "bash", "-c", script)
    ids = [int(i) for i in result.stdout.split()]
    done = [cmd_stack.wait_for(i) for i in ids]
    assert [d["status"] for d in done] == ["succeeded"] * 4, [d["error"] for d in done]
    assert [cmd_stack.api("GET", f"/jobs/{i}/artifacts/out.txt").text for i in ids] == [
        "a1 x\n", "a2 x\n", "b1 x\n", "b2 x\n"]
    assert len({d["params"]["bundle"] for d in done}) == 1 and result.stderr.count("packed") == 1
    unnamed = cli(cmd_stack, "submit", "--sweep", "lr=0.1,0.2", "--", "python", "train.py", check=False)
    assert unnamed.returncode == 2 and "--sweep lr: the command has no {lr} to fill" in unnamed.stderr


def test_a_job_runs_again_like_an_earlier_one_with_what_changed(cmd_stack: Stack, tmp_path: Path) -> None:
    """A member's next run is the last one with one thing changed. There was no way to say so from
    the CLI (only the dashboard clones): `submit --like ID` starts from the job's folder, command,
    --env, environment and seed, and what the command line gives replaces its part."""
    root = project(tmp_path)
    first = json.loads(cli(cmd_stack, "submit", "--working-dir", str(root), "--env", "RUN_NAME=first", "--seed", "11",
                           "--python-env", "lab", "--json", "--", "python", "train.py", "--steps", "5").stdout)
    assert first["status"] == "succeeded", first
    again = cli(cmd_stack, "submit", "--like", str(first["id"]), "--env", "RUN_NAME=second", "--json",
                "--", "python", "train.py", "--steps", "7")
    job = json.loads(again.stdout)
    assert job["status"] == "succeeded", job
    assert "packed" not in again.stderr and job["params"]["bundle"] == first["params"]["bundle"]  # not uploaded again
    assert job["command"]["argv"] == ["python", "train.py", "--steps", "7"]
    assert (job["command"]["env"], job["command"]["python_env"], job["seed"]) == ({"RUN_NAME": "second"}, "lab", 11)
    model = cmd_stack.api("GET", f"/jobs/{job['id']}/artifacts/model.pt").content
    assert torch.load(io.BytesIO(model), weights_only=True)["step"] == 7
    # Nothing changed: the same command, on the same device request.
    same = json.loads(cli(cmd_stack, "submit", "--like", str(job["id"]), "--json").stdout)
    assert (same["status"], same["params"]["argv"], same["device_request"]) == (
        "succeeded", job["params"]["argv"], job["device_request"])
    # A built-in kind: its params, one replaced.
    kind = json.loads(cli(cmd_stack, "submit", "regression", "-p", "steps=20", "-p", "hidden=8", "--json").stdout)
    rerun = json.loads(cli(cmd_stack, "submit", "--like", str(kind["id"]), "-p", "steps=30", "--json").stdout)
    assert (rerun["kind"], rerun["params"]["steps"], rerun["params"]["hidden"]) == ("regression", 30, 8)
    wrong = cli(cmd_stack, "submit", "--like", str(kind["id"]), "--", "python", "train.py", check=False)
    assert wrong.returncode == 2 and "is a regression job" in wrong.stderr, wrong.stderr


def test_like_another_members_command_job_asks_for_a_folder_of_ones_own(cmd_stack: Stack, tmp_path: Path) -> None:
    """Every member sees every job, and may start from one; the uploaded folder stays its owner's.
    The CLI sent it anyway and the API answered "you have no bundle … (it expired or was never
    uploaded)", which sent the member looking for an expiry."""
    root = project(tmp_path)
    first = cmd_stack.job(int(cli(cmd_stack, "submit", "--working-dir", str(root), "--python-env", "lab", "--no-wait",
                                  "--", "python", "train.py", "--steps", "2").stdout))
    other = cmd_stack.api("POST", "/users", json={"name": "like-member"}, expect=201)["token"]
    as_other = {"GPULAB_TOKEN": other}
    refused = cmd_stack.gpulab("submit", "--like", str(first["id"]), "--no-wait", env=as_other, check=False)
    assert refused.returncode == 2, refused.stderr
    assert f"its uploaded folder is {first['owner']}'s; give --working-dir" in refused.stderr, refused.stderr
    assert "expired" not in refused.stderr
    again = cmd_stack.gpulab("submit", "--like", str(first["id"]), "--working-dir", str(root), "--no-wait",
                             env=as_other)
    job = cmd_stack.job(int(again.stdout))
    assert (job["owner"], job["params"]["argv"]) == ("like-member", first["params"]["argv"])
    for i in (first["id"], job["id"]):
        cmd_stack.wait_for(i)
