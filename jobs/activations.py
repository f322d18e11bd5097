"""activations: the usual activation functions and their derivatives, by torch and autograd,
checked against their closed forms, and plotted."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobs.base import JobContext, JobKind
from jobs.common import save_figure, seed_everything, torch_device


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x_min: float = Field(default=-5.0, ge=-50.0, le=50.0)
    x_max: float = Field(default=5.0, ge=-50.0, le=50.0)
    points: int = Field(default=1001, ge=3, le=100_000)
    negative_slope: float = Field(default=0.01, ge=0.0, le=1.0, description="leaky_relu")
    alpha: float = Field(default=1.0, gt=0.0, le=10.0, description="elu")

    @model_validator(mode="after")
    def _range_is_ordered(self) -> Params:
        if self.x_min >= self.x_max:
            raise ValueError(f"x_min ({self.x_min}) must be below x_max ({self.x_max})")
        return self


Pair = tuple[Callable[[Any], Any], Callable[[Any], Any], Callable[[Any], Any]]


def closed_forms(p: Params) -> dict[str, Pair]:
    """name -> (torch's function, its closed form, the closed form of its derivative)."""
    import torch
    import torch.nn.functional as F

    def sig(x: Any) -> Any:
        return 1 / (1 + torch.exp(-x))

    def phi(x: Any) -> Any:  # the standard normal density
        return torch.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)

    def cdf(x: Any) -> Any:
        return 0.5 * (1 + torch.erf(x / math.sqrt(2)))

    a, k = p.alpha, p.negative_slope
    # At a kink (x == 0) autograd takes the right-hand branch for relu/leaky_relu/elu
    # only by convention; the closed forms below follow torch's choice so the check is exact.
    return {
        "relu": (torch.relu, lambda x: torch.where(x > 0, x, 0.0), lambda x: (x > 0).double()),
        "sigmoid": (torch.sigmoid, sig, lambda x: sig(x) * (1 - sig(x))),
        "tanh": (
            torch.tanh,
            lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
            lambda x: 1 / torch.cosh(x) ** 2,
        ),
        # torch's softplus is linear above x = 20, which is within 2e-9 of the formula.
        "softplus": (F.softplus, lambda x: torch.log1p(torch.exp(x)), sig),
        "leaky_relu": (
            lambda x: F.leaky_relu(x, k),
            lambda x: torch.where(x > 0, x, k * x),
            lambda x: torch.where(x > 0, 1.0, k * torch.ones_like(x)),
        ),
        "gelu": (F.gelu, lambda x: x * cdf(x), lambda x: cdf(x) + x * phi(x)),
        "elu": (
            lambda x: F.elu(x, a),
            lambda x: torch.where(x > 0, x, a * (torch.exp(x) - 1)),
            lambda x: torch.where(x > 0, 1.0, a * torch.exp(x)),
        ),
        "silu": (F.silu, lambda x: x * sig(x), lambda x: sig(x) * (1 + x * (1 - sig(x)))),
    }


def plot(path: Any, x: Any, curves: dict[str, tuple[Any, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display inside a worker
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    xs = x.cpu().numpy()
    for name, (y, dy) in curves.items():
        ax1.plot(xs, y.cpu().numpy(), label=name)
        ax2.plot(xs, dy.cpu().numpy(), label=name)
    ax1.set_title("f(x)")
    ax2.set_title("f'(x) by autograd")
    for ax in (ax1, ax2):
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.legend(fontsize=8)
    save_figure(fig, path, tight=True)


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # torch is imported here, not at module level: the API imports this module to list kinds.
    import torch

    seed_everything(ctx.seed)
    device = torch_device(ctx)
    # float64: the check is against exact formulas, so rounding must stay far below 1e-6.
    x0 = torch.linspace(params.x_min, params.x_max, params.points, dtype=torch.float64)
    x0 = x0.to(device)
    forms = closed_forms(params)
    results: dict[str, dict[str, float]] = {}
    curves = {}
    for i, (name, (fn, value, derivative)) in enumerate(forms.items()):
        x = x0.clone().requires_grad_(True)
        y = fn(x)
        (dy,) = torch.autograd.grad(y.sum(), x)
        with torch.no_grad():
            results[name] = {
                "value_max_abs_error": (y.detach() - value(x0)).abs().max().item(),
                "derivative_max_abs_error": (dy - derivative(x0)).abs().max().item(),
                "min": y.min().item(),
                "max": y.max().item(),
            }
        curves[name] = (y.detach(), dy)
        ctx.metric(f"{name}_derivative_error", results[name]["derivative_max_abs_error"])
        ctx.progress(i + 1, len(forms))
    plot(ctx.artifact_path("activations.png", "image/png"), x0, curves)
    worst = max(max(r["value_max_abs_error"], r["derivative_max_abs_error"]) for r in results.values())
    ctx.log(f"largest error against the closed forms: {worst:.3g}")
    return {
        "dtype": "float64",
        "device": str(device),
        "range": [params.x_min, params.x_max],
        "points": params.points,
        "activations": results,
        "max_abs_error": worst,
    }


KIND = JobKind(
    name="activations",
    params=Params,
    run=run,
    summary="Activation functions and their autograd derivatives against closed forms, plotted",
)
