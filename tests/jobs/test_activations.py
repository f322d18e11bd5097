import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.activations import KIND
from jobs.context import LocalContext

NAMES = ["relu", "sigmoid", "tanh", "softplus", "leaky_relu", "gelu", "elu", "silu"]


@pytest.mark.parametrize(
    ("seed", "setting"),
    [(0, {}), (1, {"x_min": -20, "x_max": 12, "points": 4001, "negative_slope": 0.2, "alpha": 0.5})],
)
def test_values_and_derivatives_match_closed_forms(tmp_path: Path, seed: int, setting: dict) -> None:
    ctx = LocalContext(artifacts_root=tmp_path, job_id=1, seed=seed)
    result = KIND.run(KIND.validate(setting), ctx)
    assert list(result["activations"]) == NAMES
    for name, r in result["activations"].items():
        assert r["value_max_abs_error"] < 1e-6, name
        assert r["derivative_max_abs_error"] < 1e-6, name
    assert (ctx.dir / "activations.png").stat().st_size > 0


def test_ranges_match_known_values(ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({"x_min": -2, "x_max": 2, "points": 5}), ctx)["activations"]
    assert result["relu"]["min"] == 0.0 and result["relu"]["max"] == 2.0
    assert result["sigmoid"]["max"] == pytest.approx(1 / (1 + math.exp(-2)), abs=1e-12)
    assert result["leaky_relu"]["min"] == pytest.approx(-0.02)
    assert result["elu"]["min"] == pytest.approx(math.exp(-2) - 1)
    assert result["gelu"]["max"] == pytest.approx(2 * 0.5 * (1 + math.erf(2 / math.sqrt(2))))


def test_x_range_must_be_ordered() -> None:
    # A cross-field rule: the bounds of single fields are in tests/jobs/test_contract.py.
    with pytest.raises(ValidationError, match="x_max"):
        KIND.validate({"x_min": 1, "x_max": -1})


@pytest.mark.gpu
def test_on_gpu(gpu_ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({}), gpu_ctx)
    assert result["device"] == "cuda:0" and result["max_abs_error"] < 1e-6


def test_a_plot_that_cannot_be_written_is_still_freed(tmp_path: Path) -> None:
    """A warm worker runs job after job: on a full disk each failed plot stayed open in pyplot
    (matplotlib warned of more than 20 open figures), growing the worker with every job."""
    import matplotlib.pyplot as plt

    ctx = LocalContext(artifacts_root=tmp_path, job_id=1, seed=0)
    (ctx.dir / "activations.png").mkdir(parents=True)  # the plot cannot be written, as on a full disk
    open_before = len(plt.get_fignums())
    for _ in range(3):
        with pytest.raises(OSError):
            KIND.run(KIND.validate({"points": 11}), ctx)
    assert len(plt.get_fignums()) == open_before
