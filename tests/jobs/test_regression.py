from pathlib import Path

import pytest

from jobs.context import LocalContext
from jobs.regression import KIND


def test_defaults_fit_down_to_the_noise(ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({}), ctx)
    assert result["noise_variance"] == pytest.approx(0.01)
    assert result["ratio"] == pytest.approx(result["final_mse"] / result["noise_variance"])
    assert result["final_mse"] <= 1.5 * result["noise_variance"]
    assert result["mse_to_true_curve"] < 0.5 * result["noise_variance"]
    assert len(ctx.metric_values("loss")) == 1500 and ctx.metric_values("val_mse")
    for name in ("fit.png", "loss.png", "checkpoint.pt"):
        assert (ctx.dir / name).stat().st_size > 0


def test_another_seed_and_a_noisier_curve_fit_down_to_the_noise(tmp_path: Path) -> None:
    ctx = LocalContext(artifacts_root=tmp_path, job_id=1, seed=1)
    result = KIND.run(KIND.validate({"noise_std": 0.3, "hidden": 32, "steps": 800}), ctx)
    assert result["final_mse"] <= 1.5 * result["noise_variance"]  # measured: 1.07
    assert result["mse_to_true_curve"] < 0.5 * result["noise_variance"]


def test_checkpoint_holds_what_a_retry_needs(ctx: LocalContext) -> None:
    KIND.run(KIND.validate({"steps": 5}), ctx)
    state = ctx.resume_state()
    assert state is not None
    assert state["step"] == 5 and state["params"]["steps"] == 5
    assert {"model", "optimizer", "arch"} <= set(state)


def test_a_retry_resumes_where_the_checkpoint_left_off(tmp_path: Path) -> None:
    straight = KIND.run(KIND.validate({"steps": 60}), LocalContext(artifacts_root=tmp_path, job_id=1))
    KIND.run(KIND.validate({"steps": 30}), LocalContext(artifacts_root=tmp_path, job_id=2))
    retry = LocalContext(artifacts_root=tmp_path, job_id=2)
    resumed = KIND.run(KIND.validate({"steps": 60}), retry)
    assert "resumed from the checkpoint at step 30" in retry.recorded.logs
    assert len(retry.metric_values("loss")) == 30
    assert resumed["final_mse"] == pytest.approx(straight["final_mse"], rel=1e-5)


@pytest.mark.gpu
def test_on_gpu(gpu_ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({}), gpu_ctx)
    assert result["final_mse"] <= 1.5 * result["noise_variance"]
