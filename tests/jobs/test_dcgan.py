from pathlib import Path

import pytest

from jobs.context import LocalContext
from jobs.dcgan import KIND, load_images


def test_images_are_upsampled_digits_in_tanh_range() -> None:
    x = load_images("cpu")
    assert tuple(x.shape) == (1797, 1, 16, 16)
    assert x.min().item() == pytest.approx(-1.0) and x.max().item() <= 1.0


def test_defaults_learn_where_the_ink_goes(ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({}), ctx)
    assert result["steps"] == 300
    # The mean generated image moves most of the way to the mean digit.
    assert result["mean_image_distance"] < 0.3 * result["start_mean_image_distance"]
    assert len(ctx.metric_values("d_loss")) == 300 and len(ctx.metric_values("g_loss")) == 300
    assert (ctx.dir / "samples.png").stat().st_size > 0
    state = ctx.resume_state()
    assert state is not None and state["arch"]["side"] == 16 and state["step"] == 300


def test_another_seed_and_fewer_steps_learn_where_the_ink_goes(tmp_path: Path) -> None:
    ctx = LocalContext(artifacts_root=tmp_path, job_id=1, seed=1)
    result = KIND.run(KIND.validate({"steps": 200}), ctx)
    assert result["mean_image_distance"] < 0.3 * result["start_mean_image_distance"]  # measured: 0.13 x


def test_a_retry_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    KIND.run(KIND.validate({"steps": 4, "eval_every": 2}), LocalContext(artifacts_root=tmp_path, job_id=1))
    retry = LocalContext(artifacts_root=tmp_path, job_id=1)
    result = KIND.run(KIND.validate({"steps": 6, "eval_every": 2}), retry)
    assert "resumed from the checkpoint at step 4" in retry.recorded.logs
    assert result["steps"] == 6 and len(retry.metric_values("d_loss")) == 2


@pytest.mark.gpu
def test_on_gpu(gpu_ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({}), gpu_ctx)
    assert result["mean_image_distance"] < 0.3 * result["start_mean_image_distance"]
