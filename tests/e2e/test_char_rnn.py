"""char-rnn through a real stack: train, then write from the trained model with from_job;
and the software each job ran with, as the job and its device report it."""

from __future__ import annotations

import platform

from tests.support.stack import Stack

SMALL = {"hidden": 32, "steps": 30, "eval_every": 10, "seq_len": 32, "batch_size": 16, "sample_length": 60}


def test_train_then_sample_from_the_trained_job(stack: Stack) -> None:
    trained = stack.wait_for(stack.submit("char-rnn", {**SMALL, "temperature": 0}, seed=2)["id"], timeout=180)
    assert trained["status"] == "succeeded", trained.get("error")
    result = trained["result"]
    assert result["source"] == "sonnets" and result["steps"] == 30
    perplexities = stack.api("GET", f"/jobs/{trained['id']}/metrics", params={"name": "val_perplexity"})
    assert [m["step"] for m in perplexities] == [10, 20, 30]
    # Learning, from a uniform guess over the 62 characters (the numbers: tests/jobs).
    assert result["val_perplexity"] < perplexities[0]["value"] < result["vocab_size"]
    names = {a["name"]: a for a in stack.api("GET", f"/jobs/{trained['id']}/artifacts")}
    assert {"checkpoint.pt", "samples.txt", "perplexity.png"} <= set(names)
    assert result["samples"][0] in stack.api("GET", names["samples.txt"]["url"]).text

    params = {"from_job": trained["id"], "start": "Shall I ", "temperature": 0, "sample_length": 60, "num_samples": 1}
    sampled = stack.wait_for(stack.submit("char-rnn-sample", params, seed=11)["id"], timeout=120)
    assert sampled["status"] == "succeeded", sampled.get("error")
    assert sampled["from_job_id"] == trained["id"]
    # Greedy from the same model and prompt: the very text the training job wrote.
    assert sampled["result"]["samples"] == result["samples"][:1]

    warm = {**params, "temperature": 1.0, "start": "Love"}
    again = [stack.wait_for(stack.submit("char-rnn-sample", warm, seed=5)["id"], timeout=120) for _ in range(2)]
    assert again[0]["result"]["samples"] == again[1]["result"]["samples"]  # a seed repeats its poem


def test_member_errors_are_named(stack: Stack) -> None:
    r = stack.http.post("/jobs", json={"kind": "char-rnn", "params": {"text_path": "poems.txt"}})
    body = r.json()
    assert (r.status_code, body["code"], body["field"]) == (422, "invalid_params", "params.text_path")
    failed = stack.wait_for(stack.submit("char-rnn", {**SMALL, "text_path": "/no/such/poems.txt"})["id"])
    assert (failed["status"], failed["reason"]) == ("failed", "user_error")
    assert "not a readable file" in failed["error"]


def test_jobs_and_devices_report_their_software(stack: Stack) -> None:
    import torch

    job = stack.wait_for(stack.submit("char-rnn", {**SMALL, "steps": 2}, device="cpu")["id"], timeout=120)
    assert job["status"] == "succeeded", job.get("error")
    runtime = job["runtime"]
    assert runtime["torch"] == torch.__version__ and runtime["python"] == platform.python_version()
    assert runtime["torch_threads"] == 1  # the child's setting (GPULAB_TORCH_THREADS), not the parent's
    device = next(d for d in stack.api("GET", "/devices") if d["id"] == job["device_id"])
    assert device["runtime"]["torch"] == torch.__version__ and device["runtime"]["torch_threads"] == 1
    details = stack.gpulab("devices", "--details", env={"COLUMNS": "200", "GPULAB_TOKEN": stack.token}).stdout
    assert "runtime" in details and torch.__version__ in details and platform.python_version() in details
