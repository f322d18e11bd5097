from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from jobs.base import JobError
from jobs.context import LocalContext
from jobs.finetune import KIND
from jobs.regression import KIND as REGRESSION


def test_fine_tuned_network_beats_the_same_network_from_scratch(job_on_digits: LocalContext) -> None:
    result = KIND.run(KIND.validate({"from_job": 1}), job_on_digits)
    assert result["task"] == "ge5" and result["steps"] == 40 and result["train_samples"] == 60
    assert result["finetune_accuracy"] >= 0.9
    assert result["finetune_accuracy"] > result["scratch_accuracy"]
    assert result["gain_over_scratch"] == pytest.approx(result["finetune_accuracy"] - result["scratch_accuracy"])
    assert len(job_on_digits.metric_values("loss")) == 40
    assert len(job_on_digits.metric_values("scratch_loss")) == 40


def test_another_seed_and_task_beat_the_network_from_scratch(digits_jobs_root: Path) -> None:
    ctx = LocalContext(artifacts_root=digits_jobs_root, job_id="finetune-seed-1", seed=1)
    result = KIND.run(KIND.validate({"from_job": 1, "task": "even", "train_samples": 100}), ctx)
    assert result["finetune_accuracy"] >= 0.9 and result["finetune_accuracy"] > result["scratch_accuracy"]


def test_frozen_layers_keep_their_weights(job_on_digits: LocalContext) -> None:
    result = KIND.run(KIND.validate({"from_job": 1, "task": "even", "compare_scratch": False}), job_on_digits)
    # conv1: 32 3x3 filters on 1 channel; conv2: 64 3x3 filters on 32 channels; plus biases.
    assert result["frozen_params"] == (32 * 9 + 32) + (64 * 32 * 9 + 64)
    assert "scratch_accuracy" not in result
    source = job_on_digits.load_job_checkpoint(1)["model"]
    tuned = job_on_digits.resume_state()
    assert tuned is not None and tuned["arch"]["classes"] == 2 and tuned["arch"]["task"] == "even"
    for name in ("conv1.weight", "conv2.bias"):
        assert torch.equal(tuned["model"][name], source[name])
    assert not torch.equal(tuned["model"]["fc1.weight"], source["fc1.weight"])
    assert tuple(tuned["model"]["fc2.weight"].shape) == (2, 128)


@pytest.mark.parametrize("freeze", [["conv3"], ["fc2"]])
def test_freezing_a_layer_that_cannot_be_frozen_is_a_job_error(job_on_digits: LocalContext, freeze: list) -> None:
    with pytest.raises(JobError, match="freeze names"):
        KIND.run(KIND.validate({"from_job": 1, "freeze": freeze}), job_on_digits)


def test_from_job_must_be_a_classify_digits_job(job_on_digits: LocalContext) -> None:
    REGRESSION.run(
        REGRESSION.validate({"steps": 2}), LocalContext(artifacts_root=job_on_digits.artifacts_root, job_id=2)
    )
    with pytest.raises(JobError, match="not a classify-digits job"):
        KIND.run(KIND.validate({"from_job": 2}), job_on_digits)


def test_kind_names_its_from_job_param() -> None:
    assert KIND.from_job_param == "from_job"


@pytest.mark.parametrize(
    "raw",
    [{}, {"from_job": 0}, {"from_job": 1, "task": "odd"}, {"from_job": 1, "epochs": 2}, {"from_job": 1, "steps": 0}],
)
def test_params_reject_unknown_and_out_of_range(raw: dict) -> None:
    with pytest.raises(ValidationError):
        KIND.validate(raw)


@pytest.mark.gpu
def test_on_gpu(digits_jobs_root) -> None:
    ctx = LocalContext(artifacts_root=digits_jobs_root, job_id=98, device="cuda:0")
    result = KIND.run(KIND.validate({"from_job": 1}), ctx)
    assert result["finetune_accuracy"] > result["scratch_accuracy"]


def test_a_retry_resumes_from_its_own_checkpoint(digits_jobs_root) -> None:
    KIND.run(
        KIND.validate({"from_job": 1, "steps": 10, "compare_scratch": False}),
        LocalContext(artifacts_root=digits_jobs_root, job_id=95),
    )
    retry = LocalContext(artifacts_root=digits_jobs_root, job_id=95)
    result = KIND.run(KIND.validate({"from_job": 1, "steps": 25, "compare_scratch": False}), retry)
    assert "resumed from the checkpoint at step 10" in retry.recorded.logs
    assert result["steps"] == 25 and len(retry.metric_values("loss")) == 15


def test_from_job_without_a_checkpoint_is_a_job_error(job_on_digits: LocalContext) -> None:
    with pytest.raises(JobError, match="from_job 4242 left no checkpoint"):
        KIND.run(KIND.validate({"from_job": 4242}), job_on_digits)
