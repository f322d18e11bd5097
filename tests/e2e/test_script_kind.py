"""The script kind through the service: off by default, and when an admin enables it, a member's
file runs on the worker with its reports recorded."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import _stack
from tests.support.stack import Stack

REPO = Path(__file__).resolve().parents[2]


def test_script_kind_is_off_unless_enabled(stack: Stack) -> None:
    r = stack.http.post("/jobs", json={"kind": "script", "params": {"path": "/tmp/x.py"}})
    assert r.status_code == 403 and r.json()["code"] == "kind_disabled"
    kinds = {k["name"]: k["enabled"] for k in stack.api("GET", "/job-kinds")}
    assert kinds["script"] is False and kinds["regression"] is True


def test_enabled_script_runs_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("GPULAB_ENABLE_SCRIPT_KIND", "true")
    tmp = tmp_path_factory.mktemp("script-stack")
    gen = _stack("sqlite", tmp)
    stack = next(gen)
    try:
        path = tmp_path / "train.py"
        path.write_text(f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + textwrap.dedent("""
            from jobs import report
            print("epoch 1")
            report.metric("loss", 0.5, 1)
            report.progress(1, 1)
            report.result({"best": 0.5})
        """))
        done = stack.wait_for(stack.submit("script", {"path": str(path), "args": ["--x"]})["id"])
        assert done["status"] == "succeeded", done.get("error")
        assert done["result"]["best"] == 0.5 and done["result"]["exit_code"] == 0
        logs = stack.api("GET", f"/jobs/{done['id']}/events", params={"type": "log"})["items"]
        assert "epoch 1" in [e["message"] for e in logs]
        assert stack.api("GET", f"/jobs/{done['id']}/metrics")[0]["value"] == 0.5
        names = [a["name"] for a in stack.api("GET", f"/jobs/{done['id']}/artifacts")]
        assert "script.log" in names
    finally:
        next(gen, None)
