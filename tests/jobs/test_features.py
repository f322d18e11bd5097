from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from jobs.base import JobError
from jobs.classify_digits import load_trained
from jobs.context import LocalContext
from jobs.features import KIND


@pytest.mark.parametrize("seed", [0, 1])
def test_hooked_activations_equal_the_layer_called_directly(digits_jobs_root: Path, seed: int) -> None:
    job_on_digits = LocalContext(artifacts_root=digits_jobs_root, job_id=f"features-seed-{seed}", seed=seed)
    result = KIND.run(KIND.validate({"from_job": 1, "layer": "conv1", "batch_size": 100}), job_on_digits)
    saved = np.load(job_on_digits.dir / result["artifact"])
    labels = np.load(job_on_digits.dir / "labels.npy")
    model, _, data = load_trained(job_on_digits, 1, torch.device("cpu"))
    with torch.no_grad():
        direct = model.conv1(data["x_test"]).numpy()
    assert result["shape"] == [359, 32, 6, 6] == list(saved.shape)
    np.testing.assert_allclose(saved, direct, rtol=1e-5, atol=1e-6)
    assert np.array_equal(labels, data["y_test"].numpy())
    assert len(job_on_digits.recorded.progress) == 4  # 359 images in batches of 100


def test_pt_artifact_over_all_images(job_on_digits: LocalContext) -> None:
    result = KIND.run(KIND.validate({"from_job": 1, "split": "all", "format": "pt"}), job_on_digits)
    saved = torch.load(job_on_digits.dir / "features_fc1.pt", weights_only=True)
    assert saved["features"].shape == (1797, 128) and saved["labels"].shape == (1797,)
    assert result["samples"] == 1797 and saved["layer"] == "fc1"


def test_a_linear_applied_twice_has_one_parameter_set(job_on_digits: LocalContext) -> None:
    shared = KIND.run(KIND.validate({"from_job": 1, "max_samples": 1}), job_on_digits)["shared_weights"]
    assert shared["calls_of_shared_layer"] == 2 and shared["same_weight_each_call"] is True
    # 64 -> 32, 32 -> 32 (used twice), 32 -> 10: weights plus biases, counted once each.
    assert shared["parameters"] == (64 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)
    assert shared["parameters_if_not_shared"] == shared["parameters"] + 32 * 32 + 32
    assert shared["parameter_tensors"] == 6


def test_unknown_layer_is_a_job_error(job_on_digits: LocalContext) -> None:
    with pytest.raises(JobError, match="conv9"):
        KIND.run(KIND.validate({"from_job": 1, "layer": "conv9"}), job_on_digits)


@pytest.mark.parametrize("raw", [{"layer": "fc1"}, {"from_job": 1, "hook": "x"}, {"from_job": 1, "format": "csv"}])
def test_params_reject_unknown_and_out_of_range(raw: dict) -> None:
    with pytest.raises(ValidationError):
        KIND.validate(raw)


@pytest.mark.gpu
def test_on_gpu(digits_jobs_root) -> None:
    ctx = LocalContext(artifacts_root=digits_jobs_root, job_id=96, device="cuda:0")
    assert KIND.run(KIND.validate({"from_job": 1}), ctx)["shape"] == [359, 128]
