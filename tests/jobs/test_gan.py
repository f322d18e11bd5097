from pathlib import Path

import pytest

from jobs.context import LocalContext
from jobs.gan import KIND


def assert_learned_the_target(result: dict) -> None:
    assert abs(result["generated_mean"] - result["target_mean"]) <= 0.1
    assert abs(result["generated_std"] - result["target_std"]) <= 0.15 * result["target_std"]


def test_default_gan_learns_the_gaussian(ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({}), ctx)
    assert result["loss"] == "gan" and result["steps"] == 2000
    assert_learned_the_target(result)
    assert len(ctx.metric_values("gen_mean")) == 20 and ctx.metric_values("d_loss")
    assert (ctx.dir / "histogram.png").stat().st_size > 0


def test_wgan_with_gradient_penalty_learns_the_gaussian(ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({"loss": "wgan", "wgan_mode": "gp"}), ctx)
    assert result["loss"] == "wgan-gp"
    assert_learned_the_target(result)


def test_starts_far_from_the_target(ctx: LocalContext) -> None:
    """The check above means something: an untrained generator is far from N(4, 1.25²)."""
    result = KIND.run(KIND.validate({"steps": 1}), ctx)
    assert abs(result["generated_mean"] - result["target_mean"]) > 2


def test_a_retry_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    KIND.run(KIND.validate({"steps": 200}), LocalContext(artifacts_root=tmp_path, job_id=1))
    retry = LocalContext(artifacts_root=tmp_path, job_id=1)
    result = KIND.run(KIND.validate({"steps": 300}), retry)
    assert "resumed from the checkpoint at step 200" in retry.recorded.logs
    assert result["steps"] == 300 and len(retry.metric_values("gen_mean")) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("loss", ["gan", "wgan"])
def test_on_gpu(gpu_ctx: LocalContext, loss: str) -> None:
    assert_learned_the_target(KIND.run(KIND.validate({"loss": loss}), gpu_ctx))
