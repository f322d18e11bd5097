"""The whole path: HTTP submit → dispatcher → Redis → pinned Celery worker → result, on both databases."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.stack import Stack


def test_job_runs_and_reports_through_the_api(stack: Stack) -> None:
    job = stack.submit("test-echo", {"message": "hi", "lines": 3, "steps": 4, "artifact": True})
    # Into an empty queue with the device idle, the submit dispatches its job itself.
    assert job["status"] == "dispatched" and job["device_id"] == "testhost/cpu"
    done = stack.wait_for(job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["message"] == "hi"
    assert done["result"]["device"] == "cpu"
    assert done["device_id"] == "testhost/cpu"
    assert done["attempt"] == 1 and done["runs"] == 1
    events = stack.api("GET", f"/jobs/{job['id']}/events")
    logs = [e["message"] for e in events["items"] if e["type"] == "log"]
    assert logs[:3] == ["hi 0", "hi 1", "hi 2"]
    statuses = [e["data"]["status"] for e in events["items"] if e["type"] == "status"]
    assert statuses == ["pending", "dispatched", "running", "succeeded"]
    # Each status event carries the attempt the job is on after it (none yet while pending).
    assert [e["attempt"] for e in events["items"] if e["type"] == "status"] == [0, 1, 1, 1]
    seqs = [e["seq"] for e in events["items"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    metrics = stack.api("GET", f"/jobs/{job['id']}/metrics", params={"name": "loss"})
    assert [(m["step"], m["value"]) for m in metrics] == [(s, 1.0 / s) for s in range(1, 5)]
    arts = stack.api("GET", f"/jobs/{job['id']}/artifacts")
    assert [(a["name"], a["content_type"]) for a in arts] == [("echo.txt", "text/plain")]
    body = stack.api("GET", arts[0]["url"])
    assert body.text == "hi"


def test_a_jobs_last_log_line_is_written_with_its_outcome(stack: Stack) -> None:
    done = stack.wait_for(stack.submit("test-sleep", {"seconds": 0.3})["id"])
    assert done["status"] == "succeeded", done
    *_, slept, closing, status = stack.api("GET", f"/jobs/{done['id']}/events")["items"]
    assert slept["message"] == "slept 0.3 s" and closing["message"].startswith("succeeded after 0.3")
    assert status["data"]["status"] == "succeeded"
    # One commit wrote both (one clock reading): the line cost no commit of its own.
    assert closing["created_at"] == status["created_at"]


def test_regression_on_the_worker(stack: Stack) -> None:
    job = stack.submit("regression", {}, seed=3)
    done = stack.wait_for(job["id"], timeout=120)
    assert done["status"] == "succeeded", done.get("error")
    assert done["result"]["final_mse"] < 1.5 * done["result"]["noise_variance"]
    losses = stack.api("GET", f"/jobs/{job['id']}/metrics", params={"name": "loss"})
    assert len(losses) > 10 and losses[-1]["value"] < losses[0]["value"]


def test_a_finished_jobs_chart_is_summarised_by_the_dispatcher(stack: Stack) -> None:
    job = stack.submit("test-echo", {"lines": 0, "steps": 1200})
    assert stack.wait_for(job["id"])["status"] == "succeeded"
    live = stack.api("GET", f"/jobs/{job['id']}/metrics/series")
    assert [(s["name"], s["count"], s["downsampled"]) for s in live] == [("loss", 1200, True)]
    engine = create_engine(stack.env["GPULAB_DATABASE_URL"])
    try:
        def stored() -> list | None:
            with engine.connect() as c:
                series = c.execute(text("SELECT series FROM job_metric_summaries WHERE job_id = :j"),
                                   {"j": job["id"]}).scalar()
            return json.loads(series) if isinstance(series, str) else series

        # Within a few of the dispatcher's housekeeping passes (0.5 s apart here).
        stack.wait(lambda: stored() is not None, 5, "the job's chart summary")
        assert stored() == live
    finally:
        engine.dispose()


def test_failed_job_records_reason_and_error(stack: Stack) -> None:
    job = stack.submit("test-fail", {"mode": "job-error", "message": "bad input file"})
    done = stack.wait_for(job["id"])
    assert (done["status"], done["reason"], done["error"]) == ("failed", "user_error", "bad input file")
    crash = stack.wait_for(stack.submit("test-fail", {"mode": "exception"})["id"])
    assert crash["reason"] == "user_error" and "ValueError: it went wrong" in crash["error"]


def test_server_sent_events_resume_after_last_event_id(stack: Stack) -> None:
    job = stack.submit("test-echo", {"lines": 5, "steps": 0})
    stack.wait_for(job["id"])
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {stack.token}"}

    def read(last_id: int) -> list[dict]:
        out = []
        with httpx.stream("GET", f"{stack.url}/jobs/{job['id']}/events",
                          headers={**headers, "Last-Event-ID": str(last_id)}, timeout=20) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data:"):
                    out.append(json.loads(line[5:]))
        return out

    everything = read(0)
    assert everything[-1]["data"]["status"] == "succeeded"
    resumed = read(everything[3]["seq"])
    assert resumed == everything[4:]


def test_live_stream_follows_a_running_job(stack: Stack) -> None:
    job = stack.submit("test-sleep", {"seconds": 1.5})
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {stack.token}"}
    types = []
    with httpx.stream("GET", f"{stack.url}/jobs/{job['id']}/events", headers=headers, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                types.append((event["type"], (event.get("data") or {}).get("status")))
    assert types[0] == ("status", "pending")
    assert types[-1] == ("status", "succeeded")
    assert ("status", "running") in types


# The CLI is a client of the HTTP API: the database behind it changes nothing it does, and its
# seven commands cost a Python start each.
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_cli_submit_follows_and_exits_by_outcome(stack: Stack) -> None:
    env = {"GPULAB_TOKEN": stack.token}
    ok = stack.gpulab("submit", "test-echo", "-p", "message=cli", "-p", "lines=2", env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["message"] == "cli"
    assert "cli 1" in ok.stderr  # the log was followed
    failed = stack.gpulab("submit", "test-fail", env=env, check=False)
    assert failed.returncode == 1
    bad = stack.gpulab("submit", "no-such-kind", env=env, check=False)
    assert bad.returncode == 2 and "unknown_kind" in bad.stderr
    job_id = int(stack.gpulab("submit", "test-echo", "--no-wait", env=env).stdout.strip())
    stack.wait_for(job_id)
    shown = json.loads(stack.gpulab("show", str(job_id), "--json", env=env).stdout)
    assert shown["status"] == "succeeded"
    logs = stack.gpulab("logs", str(job_id), env=env).stdout
    assert "hello 0" in logs
    listed = json.loads(stack.gpulab("jobs", "--json", "--status", "succeeded", env=env).stdout)
    assert job_id in [j["id"] for j in listed["items"]]
