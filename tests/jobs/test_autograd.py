import math
from pathlib import Path

import pytest

from jobs.autograd import KIND
from jobs.context import LocalContext


@pytest.mark.parametrize(("seed", "setting"), [(0, {}), (1, {"points": [-7.5, -0.01, 0.25, 4.0, 9.0]})])
def test_gradients_match_analytic_derivatives(tmp_path: Path, seed: int, setting: dict) -> None:
    ctx = LocalContext(artifacts_root=tmp_path, job_id=1, seed=seed)
    result = KIND.run(KIND.validate(setting), ctx)
    names = [e["name"] for e in result["expressions"]]
    assert names == ["x**3", "sin(x)*exp(x)", "log(1+x**2)", "tanh(x**2+sin(x))", "x*y+y**2"]
    for expr in result["expressions"]:
        assert expr["max_abs_error"] < 1e-6, expr["name"]
    assert result["second_derivative"]["max_abs_error"] < 1e-6
    assert result["max_abs_error"] < 1e-6


def test_against_hand_computed_values(ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({"points": [0.5, 2.0]}), ctx)
    by_name = {e["name"]: e for e in result["expressions"]}
    # Independent of the kind's own formulas: worked out by hand with math.
    assert by_name["x**3"]["autograd"][0] == pytest.approx([0.75, 12.0], abs=1e-12)
    expected = [math.exp(x) * (math.sin(x) + math.cos(x)) for x in (0.5, 2.0)]
    assert by_name["sin(x)*exp(x)"]["autograd"][0] == pytest.approx(expected, abs=1e-12)
    xy = by_name["x*y+y**2"]
    assert xy["points"][0] == [0.5, 0.5, 2.0, 2.0] and xy["points"][1] == [0.5, 2.0, 0.5, 2.0]
    assert xy["autograd"][1] == pytest.approx([1.5, 4.5, 3.0, 6.0])  # d/dy = x + 2y


def test_graph_walks_next_functions(ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({"points": [1.0]}), ctx)
    by_name = {e["name"]: e["graph"] for e in result["expressions"]}
    assert by_name["sin(x)*exp(x)"] == [
        "MulBackward0",
        "SinBackward0",
        "ExpBackward0",
        "AccumulateGrad",
    ]
    assert by_name["x*y+y**2"].count("AccumulateGrad") == 2  # one leaf each for x and y


@pytest.mark.gpu
def test_on_gpu(gpu_ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({}), gpu_ctx)
    assert result["device"] == "cuda:0" and result["max_abs_error"] < 1e-6
