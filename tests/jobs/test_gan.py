from pathlib import Path

import pytest

from jobs.context import LocalContext
from jobs.gan import KIND


def assert_learned_the_target(result: dict) -> None:
    """The kind's check: mean within a tenth of the target's std, std within 15 %."""
    assert result["mean_error"] <= 0.1 * result["target_std"], result
    assert result["std_relative_error"] <= 0.15, result


def test_default_gan_learns_the_gaussian(ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({}), ctx)
    assert result["loss"] == "gan" and result["steps"] == 1000
    assert_learned_the_target(result)
    assert len(ctx.metric_values("gen_mean")) == 10 and ctx.metric_values("d_loss")
    assert (ctx.dir / "histogram.png").stat().st_size > 0


# The report that tuned the kind: wgan-gp on N(-2.5, 0.7²) missed the std check on 2 of 4 seeds.
# Then other seeds on targets at the edges of the documented range (mean ±10, std 0.1 to 5).
CASES = [
    *[("wgan", "gp", seed, -2.5, 0.7) for seed in range(4)],
    ("wgan", "gp", 4, 9.5, 0.1),
    ("gan", None, 1, -8.0, 4.5),
    ("gan", None, 2, 10.0, 0.3),
]


@pytest.mark.parametrize(("loss", "mode", "seed", "mean", "std"), CASES)
def test_learns_targets_across_the_range_and_seeds(
    tmp_path: Path, loss: str, mode: str | None, seed: int, mean: float, std: float
) -> None:
    params = {"loss": loss, "target_mean": mean, "target_std": std, **({"wgan_mode": mode} if mode else {})}
    result = KIND.run(KIND.validate(params), LocalContext(artifacts_root=tmp_path, job_id=1, seed=seed))
    assert_learned_the_target(result)


def test_an_untrained_generator_fails_the_check(ctx: LocalContext) -> None:
    """The check above means something: one step leaves the generator's spread far off."""
    result = KIND.run(KIND.validate({"steps": 1}), ctx)
    assert result["std_relative_error"] > 0.5


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
