"""Another member's job: its place in the queue is public, its contents are not.

Before: any member read any job's log, metrics and artifacts (a trained model, a command's
output), and saw a command job's --env values (where members put their API keys) in
GET /jobs. Now a job's log, events, metrics and artifacts answer 403 to members other than its
owner, and its --env values are hidden from them; admins read everything.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.faults.conftest import add_member, own_stack
from tests.support.commands import reachable_dir
from tests.support.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    runs = reachable_dir("gpulab-member-reads-")  # the members' accounts must reach their run folders
    try:
        with own_stack("sqlite", tmp_path_factory.mktemp("member-reads"),
                       env={"GPULAB_ENABLE_COMMAND_KIND": "true", "GPULAB_RUNS_DIR": str(runs)}) as s:
            yield s
    finally:
        shutil.rmtree(runs, ignore_errors=True)


def test_a_member_reads_only_their_own_jobs_contents(stack: Stack) -> None:
    _, alice = add_member(stack, "alice")
    _, bob = add_member(stack, "bob")
    job = stack.submit("test-echo", {"message": "private", "lines": 2, "steps": 2, "artifact": True}, token=alice)
    stack.wait_for(job["id"])
    jid = job["id"]
    reads = [f"/jobs/{jid}/log", f"/jobs/{jid}/events", f"/jobs/{jid}/metrics", f"/jobs/{jid}/metrics/series",
             f"/jobs/{jid}/artifacts", f"/jobs/{jid}/artifacts/echo.txt"]
    for path in reads:
        refused = stack.api("GET", path, token=bob, expect=403)
        assert refused["code"] == "forbidden" and refused["field"] == "job_id" and refused["value"] == jid, refused
        assert "belongs to another member" in refused["detail"]
        stack.api("GET", path, token=alice, expect=200)
        stack.api("GET", path, expect=200)  # the admin
    refused = stack.api("POST", f"/jobs/{jid}/events/tickets", token=bob, expect=403)
    assert refused["code"] == "forbidden"
    stack.api("POST", f"/jobs/{jid}/events/tickets", token=alice, expect=201)
    # What the shared queue shows stays public: the job itself, without its result.
    seen = stack.api("GET", f"/jobs/{jid}", token=bob)
    assert seen["owner"].startswith("alice") and seen["status"] == "succeeded" and seen["result"] is None
    assert stack.api("GET", f"/jobs/{jid}", token=alice)["result"]["message"] == "private"


def test_another_members_failed_command_shows_its_first_error_line_only(stack: Stack) -> None:
    _, alice = add_member(stack, "alice")
    _, bob = add_member(stack, "bob")
    job = stack.submit("command", {"argv": ["bash", "-c", "echo token=s3cret; exit 3"]}, token=alice, device="cpu")
    own = stack.wait_for(job["id"])
    assert own["status"] == "failed" and "\n" in own["error"], own  # the job's last output, for its owner
    seen = stack.api("GET", f"/jobs/{job['id']}", token=bob)["error"]
    assert seen == own["error"].splitlines()[0] and "s3cret" not in seen, seen


def test_a_command_jobs_env_values_are_hidden_from_other_members(stack: Stack) -> None:
    owner_name, alice = add_member(stack, "alice")
    _, bob = add_member(stack, "bob")
    job = stack.submit("command", {"argv": ["true"], "env": {"WANDB_API_KEY": "s3cret-key"}}, token=alice,
                       device="cpu")
    seen_by_bob = stack.api("GET", f"/jobs/{job['id']}", token=bob)
    assert seen_by_bob["params"]["env"] == {"WANDB_API_KEY": "***"}
    assert seen_by_bob["command"]["env"] == {"WANDB_API_KEY": "***"}, seen_by_bob["command"]
    assert "s3cret-key" not in str(seen_by_bob)
    listed = stack.api("GET", "/jobs", token=bob, params={"owner": owner_name})["items"]
    assert [j["params"]["env"] for j in listed] == [{"WANDB_API_KEY": "***"}]
    assert stack.api("GET", f"/jobs/{job['id']}", token=alice)["params"]["env"] == {"WANDB_API_KEY": "s3cret-key"}
    assert stack.api("GET", f"/jobs/{job['id']}", token=alice)["command"]["env"] == {"WANDB_API_KEY": "s3cret-key"}
    assert stack.api("GET", f"/jobs/{job['id']}")["params"]["env"] == {"WANDB_API_KEY": "s3cret-key"}
    # Submitting what bob saw (a clone) would run with the mask as the key: refused, naming the variable.
    r = stack.api("POST", "/jobs", token=bob, expect=422,
                  json={"kind": "command", "params": seen_by_bob["params"], "device": "cpu"})
    assert (r["code"], r["field"], r["value"]) == ("invalid_params", "params.env.WANDB_API_KEY", "***"), r
    assert "give the real one" in r["detail"]


def test_a_member_starts_only_from_their_own_jobs_checkpoint(stack: Stack) -> None:
    """finetune/features/char-rnn's from_job reads the earlier job's checkpoint, one of its
    artifacts: another member's is refused at submit, as its download is."""
    _, alice = add_member(stack, "alice")
    _, bob = add_member(stack, "bob")
    source = stack.submit("test-echo", {"message": "weights", "steps": 1}, token=alice)["id"]
    stack.wait_for(source)
    refused = stack.api("POST", "/jobs", token=bob, json={"kind": "finetune", "params": {"from_job": source}},
                        expect=403)
    assert refused["field"] == "params.from_job" and refused["value"] == source, refused
    assert "belongs to another member" in refused["detail"], refused
    # Its owner and the admins may.
    for token in (alice, None):
        job = stack.api("POST", "/jobs", token=token, json={"kind": "finetune", "params": {"from_job": source}},
                        expect=201)
        stack.wait_for(job["id"])
