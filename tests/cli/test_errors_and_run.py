"""Every CLI failure is one line saying what to do, with exit 2 for usage and 1 for failures;
`gpulab run` gives each run its own folder and resumes only when asked."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stack import free_port


def gpulab(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPULAB_")}
    base.update(GPULAB_STATE_DIR=str(tmp_path / "state"), GPULAB_CREDENTIALS_FILE=str(tmp_path / "token"),
                GPULAB_API_URL=f"http://127.0.0.1:{free_port()}", GPULAB_TORCH_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=base, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_a_database_never_migrated_says_run_gpulab_migrate(tmp_path: Path) -> None:
    # No file there (another account's settings, a typo in GPULAB_STATE_DIR): none is left behind.
    one_line_error(gpulab(tmp_path, "users", "add", "alice"), 1, "no gpulab database at", "run `gpulab migrate`")
    assert not (tmp_path / "state" / "gpulab.sqlite3").exists()
    # A database file that is not gpulab's.
    (tmp_path / "state").mkdir()
    sqlite3.connect(tmp_path / "state" / "gpulab.sqlite3").execute("CREATE TABLE other (x)").connection.close()
    one_line_error(gpulab(tmp_path, "users", "list"), 1, "no gpulab tables", "run `gpulab migrate`")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    sqlite3.connect(tmp_path / "state" / "gpulab.sqlite3").execute("CREATE TABLE other (x)").connection.close()
    result = gpulab(tmp_path, "--debug", "users", "add", "alice")
    assert result.returncode == 1 and "Traceback" in result.stderr and "no such table" in result.stderr


@pytest.mark.parametrize(("args", "needles"), [
    (("show",), ("Missing argument", "gpulab show --help")),
    (("--no-such-option",), ("No such option",)),
    (("run", "regression", "-p", "epochs=3"), ("-p epochs", "Extra inputs", "gpulab kinds")),
    (("run", "regression", "-p", "steps=abc"), ("-p steps", "(got 'abc')")),
    (("run", "regression", "-p", "steps=3", "-p", "steps=4"), ("given twice",)),
    (("run", "no-such-kind"), ("no job kind is called 'no-such-kind'",)),
    (("run", "regression", "--resume", "nowhere"), ("not a gpulab run folder",)),
])
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    one_line_error(gpulab(tmp_path, *args), 2, *needles)


def test_failures_exit_1_with_what_to_do(tmp_path: Path) -> None:
    one_line_error(gpulab(tmp_path, "jobs"), 1, "no token", "gpulab login")
    (tmp_path / "token").write_text("glab_x\n")
    one_line_error(gpulab(tmp_path, "jobs"), 1, "cannot reach gpulab", "gpulab up")


def test_each_run_gets_its_own_folder_and_resumes_only_when_asked(tmp_path: Path) -> None:
    first = gpulab(tmp_path, "run", "regression", "-p", "steps=20", "-p", "eval_every=10")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["steps"] == 20
    # Other params, and then another kind: new folders, no checkpoint of an earlier run read.
    second = gpulab(tmp_path, "run", "regression", "-p", "steps=30", "-p", "hidden=16", "-p", "eval_every=10")
    assert second.returncode == 0, second.stderr
    assert "resumed" not in second.stderr
    gan = gpulab(tmp_path, "run", "gan", "-p", "steps=10", "-p", "eval_every=5")
    assert gan.returncode == 0, gan.stderr
    runs = tmp_path / "gpulab-run"
    assert sorted(p.name for p in runs.iterdir()) == ["gan-1", "regression-1", "regression-2"]
    assert json.loads((runs / "regression-2" / "run.json").read_text())["params"]["hidden"] == 16
    assert (runs / "regression-1" / "checkpoint.pt").is_file()
    # --resume continues that run from its checkpoint, with its params unless given again.
    resumed = gpulab(tmp_path, "run", "regression", "-p", "steps=40", "--resume", str(runs / "regression-1"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from the checkpoint at step 20" in resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == 40
    assert json.loads((runs / "regression-1" / "result.json").read_text())["steps"] == 40
    one_line_error(gpulab(tmp_path, "run", "gan", "--resume", str(runs / "regression-1")), 2,
                   "that is a regression run")


def test_from_job_without_a_login_says_what_it_needs(tmp_path: Path) -> None:
    one_line_error(gpulab(tmp_path, "run", "finetune", "-p", "from_job=9"), 2, "job 9's checkpoint",
                   "gpulab login", "--from-run")
    assert not (tmp_path / "gpulab-run").exists() or not any((tmp_path / "gpulab-run").glob("finetune-*"))


def test_a_run_from_a_local_run_names_that_run_not_a_job(tmp_path: Path) -> None:
    """With --from-run, from_job is a placeholder: the log names the folder the network came from."""
    trained = gpulab(tmp_path, "run", "classify-digits", "-p", "epochs=1")
    assert trained.returncode == 0, trained.stderr
    tuned = gpulab(tmp_path, "run", "finetune", "-p", "steps=2", "-p", "compare_scratch=false",
                   "--from-run", "gpulab-run/classify-digits-1")
    assert tuned.returncode == 0, tuned.stderr
    assert "fine-tuning run gpulab-run/classify-digits-1's network on digit < 5 vs digit >= 5" in tuned.stderr
    assert "job 1" not in tuned.stderr


def test_invalid_settings_name_the_variable(tmp_path: Path) -> None:
    one_line_error(gpulab(tmp_path, "jobs", env={"GPULAB_HEARTBEAT_S": "-1"}), 2,
                   "invalid settings: GPULAB_HEARTBEAT_S", "(got '-1')")
