"""A job that starts from another job's checkpoint records the link, and the API shows it."""

from __future__ import annotations

from tests.support.stack import Stack


def test_finetune_links_to_the_job_it_starts_from(stack: Stack) -> None:
    base = stack.wait_for(stack.submit("classify-digits", {"epochs": 3}, seed=1)["id"], timeout=120)
    assert base["status"] == "succeeded", base.get("error")
    assert "checkpoint.pt" in [a["name"] for a in stack.api("GET", f"/jobs/{base['id']}/artifacts")]
    tuned = stack.wait_for(stack.submit("finetune", {"from_job": base["id"], "steps": 20})["id"], timeout=120)
    assert tuned["status"] == "succeeded", tuned.get("error")
    assert tuned["from_job_id"] == base["id"]
    assert 0.5 < tuned["result"]["finetune_accuracy"] <= 1.0


def test_from_job_must_exist_and_have_succeeded(stack: Stack) -> None:
    r = stack.http.post("/jobs", json={"kind": "finetune", "params": {"from_job": 987654}})
    body = r.json()
    assert (r.status_code, body["code"], body["field"], body["value"]) == (
        404, "job_not_found", "params.from_job", 987654)
    failed = stack.wait_for(stack.submit("test-fail")["id"])
    r = stack.http.post("/jobs", json={"kind": "finetune", "params": {"from_job": failed["id"]}})
    assert (r.status_code, r.json()["code"]) == (422, "invalid_params")
