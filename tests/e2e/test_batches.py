"""A sweep submitted as one batch, through the real API, a real worker and the CLI, on both databases."""

from __future__ import annotations

import json

from tests.support.stack import Stack


def _latest_id(stack: Stack) -> int:
    items = stack.api("GET", "/jobs", params={"limit": 1})["items"]
    return items[0]["id"] if items else 0


def test_a_batch_runs_to_completion_and_lists_by_its_id(stack: Stack) -> None:
    bodies = [{"kind": "test-echo", "params": {"message": f"m{i}", "lines": 1}} for i in range(4)]
    batch = stack.api("POST", "/jobs/batch", json={"jobs": bodies}, expect=201)
    ids = [j["id"] for j in batch["jobs"]]
    assert batch["batch_id"] == ids[0] and {j["batch_id"] for j in batch["jobs"]} == {ids[0]}
    assert batch["jobs"][0]["status"] == "dispatched"  # one slot, idle: the batch's placement started it
    done = [stack.wait_for(i) for i in ids]
    assert [(d["status"], d["result"]["message"]) for d in done] == [("succeeded", f"m{i}") for i in range(4)]
    stack.submit("test-echo", {"lines": 0})  # not of the batch
    listed = stack.api("GET", "/jobs", params={"batch": ids[0]})["items"]
    assert [j["id"] for j in listed] == ids[::-1]


def test_an_invalid_entry_refuses_the_whole_batch_naming_it(stack: Stack) -> None:
    before = _latest_id(stack)
    bodies = [{"kind": "test-echo", "params": {"lines": 1}} for _ in range(5)]
    bodies[3]["params"] = {"lines": "many"}
    problem = stack.api("POST", "/jobs/batch", json={"jobs": bodies}, expect=422)
    assert (problem["code"], problem["field"], problem["value"]) == ("invalid_params", "jobs[3].params.lines", "many")
    bodies[3] = {"kind": "test-echo", "priority": 500}  # refused by the request's own schema
    problem = stack.api("POST", "/jobs/batch", json={"jobs": bodies}, expect=422)
    assert (problem["field"], problem["value"]) == ("jobs[3].priority", 500)
    assert _latest_id(stack) == before


def test_a_member_cannot_pass_a_members_limits_through_a_batch(stack: Stack) -> None:
    grace = stack.gpulab("users", "add", "batch-grace").stdout.strip()
    before = _latest_id(stack)
    bodies = [{"kind": "test-echo"}, {"kind": "test-echo", "priority": 10}]
    problem = stack.api("POST", "/jobs/batch", json={"jobs": bodies}, token=grace, expect=403)
    assert (problem["code"], problem["field"], problem["value"]) == ("forbidden", "jobs[1].priority", 10)
    problem = stack.api("POST", "/jobs/batch", json={"jobs": [{"kind": "test-echo"}] * 1001}, token=grace,
                        expect=422)
    assert (problem["field"], problem["value"]) == ("jobs", 1001)
    assert _latest_id(stack) == before


def test_the_cli_submits_a_sweep_as_one_batch(stack: Stack) -> None:
    env = {"GPULAB_TOKEN": stack.token}
    result = stack.gpulab("submit", "test-echo", "-p", "lines=1", "--sweep", "message=a,b",
                          "--sweep", "steps=1,2,3", env=env)
    ids = [int(i) for i in result.stdout.split()]
    assert len(ids) == 6 and f"gpulab jobs --batch {ids[0]}" in result.stderr
    done = [stack.wait_for(i) for i in ids]
    assert [(d["params"]["message"], d["params"]["steps"], d["params"]["lines"], d["batch_id"]) for d in done] == [
        (m, s, 1, ids[0]) for m in "ab" for s in (1, 2, 3)]
    listed = json.loads(stack.gpulab("jobs", "--batch", str(ids[0]), "--json", env=env).stdout)["items"]
    assert sorted(j["id"] for j in listed) == ids

    before = _latest_id(stack)
    wrong = stack.gpulab("submit", "test-echo", "--sweep", "steps=1,x", check=False, env=env)
    assert wrong.returncode == 2 and "--sweep steps=x" in wrong.stderr and "jobs[1].params.steps" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert _latest_id(stack) == before

    twice = stack.gpulab("submit", "test-sleep", "-p", "seconds=30", "--sweep", "seconds=30,31,32", check=False,
                          env=env)
    assert twice.returncode == 2 and "--sweep seconds: -p seconds gives it too" in twice.stderr
    sweep = stack.gpulab("submit", "test-sleep", "--sweep", "seconds=30,31,32", env=env)
    sleeps = [int(i) for i in sweep.stdout.split()]
    stack.wait_for(sleeps[0], ("running",))
    said = stack.gpulab("cancel", "--batch", str(sleeps[0]), env=env).stdout
    assert said.strip() == f"batch {sleeps[0]}: cancelled {sleeps[1]} {sleeps[2]}; cancel requested {sleeps[0]}"
    assert [stack.wait_for(i)["status"] for i in sleeps] == ["cancelled"] * 3
