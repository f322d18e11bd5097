"""The script kind: output as log, reports as progress/metrics/result, cancel kills the process group."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.base import JobError
from jobs.context import LocalContext
from jobs.script import KIND, Params

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "user_script.py"
    path.write_text(f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + textwrap.dedent(body))
    return str(path)


def test_reports_become_progress_metrics_and_result(tmp_path: Path) -> None:
    path = write(tmp_path, """
        from jobs import report
        print("hello from the script", sys.argv[1:])
        for step in range(1, 4):
            report.metric("loss", 1 / step, step)
            report.progress(step, 3)
        report.result({"answer": 42})
    """)
    ctx = LocalContext(artifacts_root=tmp_path / "art", job_id=1)
    result = KIND.run(Params(path=path, args=["--lr", "0.1"]), ctx)
    assert result["answer"] == 42 and result["exit_code"] == 0
    assert ctx.recorded.logs == ["hello from the script ['--lr', '0.1']"]
    assert ctx.metric_values("loss") == [1.0, 0.5, pytest.approx(1 / 3)]
    assert ctx.recorded.progress == [(1, 3), (2, 3), (3, 3)]
    assert (tmp_path / "art" / "1" / "script.log").read_text().startswith("hello")


def test_failing_script_fails_the_job_with_its_output(tmp_path: Path) -> None:
    path = write(tmp_path, "print('about to fail'); raise SystemExit(3)\n")
    with pytest.raises(JobError, match="code 3") as err:
        KIND.run(Params(path=path), LocalContext(artifacts_root=tmp_path, job_id=2))
    assert "about to fail" in str(err.value)


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_cancel_ends_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    path = write(tmp_path, f"""
        import subprocess, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """)
    ctx = LocalContext(artifacts_root=tmp_path, job_id=3, stop_after_s=1.0)
    t0 = time.monotonic()
    result = KIND.run(Params(path=path), ctx)
    assert result["stopped_early"] is True and time.monotonic() - t0 < 15
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(child), "the script's own child outlived the cancel"


def test_params_need_an_absolute_python_file() -> None:
    with pytest.raises(ValidationError, match="absolute path"):
        Params(path="relative.py")
    with pytest.raises(ValidationError):
        Params(path="/tmp/x.py", shell=True)
    assert KIND.admin_enabled_only
    assert sys.executable
