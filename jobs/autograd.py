"""autograd: gradients of a few expressions by backpropagation, checked against the
derivatives worked out by hand, and the graph autograd recorded to compute them."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.base import JobContext, JobKind
from jobs.common import seed_everything, torch_device

Point = Annotated[float, Field(ge=-10.0, le=10.0)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: list[Point] = Field(default=[-2.0, -0.5, 0.0, 0.5, 1.5, 3.0], min_length=1, max_length=1000)


def expressions() -> dict[str, tuple[Callable[..., Any], Callable[..., list[Any]]]]:
    """name -> (f(*vars), the analytic gradient as one tensor per variable)."""
    import torch

    def tanh_inner(x: Any) -> Any:
        return x**2 + torch.sin(x)

    return {
        "x**3": (lambda x: x**3, lambda x: [3 * x**2]),
        "sin(x)*exp(x)": (
            lambda x: torch.sin(x) * torch.exp(x),
            lambda x: [torch.exp(x) * (torch.sin(x) + torch.cos(x))],
        ),
        "log(1+x**2)": (lambda x: torch.log(1 + x**2), lambda x: [2 * x / (1 + x**2)]),
        "tanh(x**2+sin(x))": (
            lambda x: torch.tanh(tanh_inner(x)),
            lambda x: [(1 - torch.tanh(tanh_inner(x)) ** 2) * (2 * x + torch.cos(x))],
        ),
        "x*y+y**2": (lambda x, y: x * y + y**2, lambda x, y: [y, x + 2 * y]),
    }


def graph_names(output: Any) -> list[str]:
    """The grad_fn nodes reachable from output, breadth first (what backward() will visit)."""
    names, seen, frontier = [], set(), [output.grad_fn]
    while frontier:
        node = frontier.pop(0)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.append(type(node).__name__)
        frontier.extend(fn for fn, _ in node.next_functions)
    return names


def check(name: str, f: Callable[..., Any], grad: Callable[..., list[Any]], inputs: list[Any]) -> dict:
    """Backpropagate f at the inputs and compare with the analytic gradient."""
    import torch

    xs = [t.clone().requires_grad_(True) for t in inputs]
    out = f(*xs)
    # Summing is how a vector of independent outputs gets one backward pass: d(sum)/dx_i = f'(x_i).
    out.sum().backward()
    with torch.no_grad():
        analytic = grad(*inputs)
    errors = [(x.grad - a).abs().max().item() for x, a in zip(xs, analytic, strict=True)]
    return {
        "name": name,
        "variables": ["x", "y"][: len(xs)],
        "points": [t.tolist() for t in inputs],
        "values": out.detach().tolist(),
        "autograd": [x.grad.tolist() for x in xs],
        "analytic": [a.tolist() for a in analytic],
        "max_abs_error": max(errors),
        "graph": graph_names(out),
    }


def second_derivative(x0: Any) -> dict[str, Any]:
    """d2/dx2 x**3 = 6x: create_graph keeps the first backward differentiable."""
    import torch

    x = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((x**3).sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), x)
    return {
        "name": "d2/dx2 x**3",
        "autograd": g2.tolist(),
        "analytic": (6 * x0).tolist(),
        "max_abs_error": (g2 - 6 * x0).abs().max().item(),
    }


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # torch is imported here, not at module level: the API imports this module to list kinds.
    import torch

    seed_everything(ctx.seed)
    device = torch_device(ctx)
    # float64: the check is against exact formulas, so rounding must stay far below 1e-6.
    x = torch.tensor(params.points, dtype=torch.float64, device=device)
    # The two-variable expression runs on every (x, y) pair of the points.
    pairs = list(itertools.product(params.points, repeat=2))
    xy = torch.tensor(pairs, dtype=torch.float64, device=device).T
    results = []
    exprs = expressions()
    for i, (name, (f, grad)) in enumerate(exprs.items()):
        inputs = [x] if f.__code__.co_argcount == 1 else [xy[0], xy[1]]
        results.append(check(name, f, grad, inputs))
        ctx.metric("max_abs_error", results[-1]["max_abs_error"], step=i)
        ctx.progress(i + 1, len(exprs) + 1)
    second = second_derivative(x)
    ctx.progress(len(exprs) + 1, len(exprs) + 1)
    worst = max([r["max_abs_error"] for r in results] + [second["max_abs_error"]])
    ctx.log(f"largest gradient error against the analytic derivatives: {worst:.3g}")
    return {
        "dtype": "float64",
        "device": str(device),
        "expressions": results,
        "second_derivative": second,
        "max_abs_error": worst,
    }


KIND = JobKind(
    name="autograd",
    params=Params,
    run=run,
    summary="Gradients of expressions by autograd against analytic derivatives; the grad_fn graph",
)
