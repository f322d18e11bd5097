"""regression: a small MLP fits a noisy curve, y = sin(2x) + 0.3x + noise.

A good fit leaves only the noise: its held-out MSE approaches the noise variance, and the
ratio of the two says how close the fit came (below 1.5 with the defaults).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.base import JobContext, JobKind
from jobs.common import save_figure, seed_everything, torch_device


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_train: int = Field(default=512, ge=8, le=1_000_000)
    n_val: int = Field(default=512, ge=8, le=1_000_000)
    noise_std: float = Field(default=0.1, gt=0.0, le=2.0)
    x_range: float = Field(default=3.0, gt=0.0, le=20.0, description="x is uniform in ±x_range")
    hidden: int = Field(default=64, ge=2, le=1024)
    depth: int = Field(default=2, ge=1, le=8)
    steps: int = Field(default=1500, ge=1, le=200_000)
    lr: float = Field(default=1e-2, gt=0.0, le=1.0)
    batch_size: int | None = Field(default=None, ge=1, le=1_000_000, description="None: full batch")
    eval_every: int = Field(default=50, ge=1, le=100_000)
    checkpoint_every: int = Field(default=500, ge=1, le=200_000)


def make_data(params: Params, n: int, gen: Any, device: Any) -> tuple[Any, Any, Any]:
    """(x, noisy y, noiseless y) as column vectors on the device."""
    import torch

    x = (torch.rand(n, 1, generator=gen, dtype=torch.float32) * 2 - 1) * params.x_range
    clean = torch.sin(2 * x) + 0.3 * x
    y = clean + params.noise_std * torch.randn(n, 1, generator=gen)
    return x.to(device), y.to(device), clean.to(device)


def train_step(model: Any, opt: Any, x: Any, y: Any) -> float:
    import torch.nn.functional as F

    model.train()
    opt.zero_grad(set_to_none=True)
    loss = F.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


def evaluate(model: Any, x: Any, y: Any) -> float:
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        return F.mse_loss(model(x), y).item()


def save_checkpoint(ctx: JobContext, model: Any, opt: Any, step: int, params: Params, losses: list) -> None:
    import torch

    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "params": params.model_dump(),
            "arch": {
                "net": "MLP",
                "in_features": 1,
                "hidden": params.hidden,
                "depth": params.depth,
            },
            "losses": losses,
        },
        ctx.checkpoint_path(),
    )


def plot(ctx: JobContext, model: Any, data: dict[str, Any], losses: list[float], vals: list) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display inside a worker
    import matplotlib.pyplot as plt
    import torch

    x, y, _ = data["train"]
    grid = torch.linspace(x.min().item(), x.max().item(), 400, device=x.device).unsqueeze(1)
    with torch.no_grad():
        pred = model(grid)
    g = grid.cpu().squeeze(1).numpy()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(x.cpu().squeeze(1).numpy(), y.cpu().squeeze(1).numpy(), s=4, alpha=0.4, label="train")
    ax.plot(g, (torch.sin(2 * grid) + 0.3 * grid).cpu().squeeze(1).numpy(), "k--", label="true curve")
    ax.plot(g, pred.cpu().squeeze(1).numpy(), "r", label="MLP")
    ax.legend()
    save_figure(fig, ctx.artifact_path("fit.png", "image/png"))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(losses) + 1), losses, label="train loss")
    ax.plot([s for s, _ in vals], [v for _, v in vals], marker=".", label="val MSE")
    ax.axhline(data["noise_variance"], color="grey", ls="--", label="noise variance")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend()
    save_figure(fig, ctx.artifact_path("loss.png", "image/png"))


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # torch is imported here, not at module level: the API imports this module to list kinds.
    import torch

    from jobs.nets import MLP

    gen = seed_everything(ctx.seed)
    device = torch_device(ctx)
    data: dict[str, Any] = {
        "train": make_data(params, params.n_train, gen, device),
        "val": make_data(params, params.n_val, gen, device),
        "noise_variance": params.noise_std**2,
    }
    model = MLP(1, params.hidden, params.depth, 1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=params.lr)
    step, losses = 0, []
    if (state := ctx.resume_state()) is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, losses = state["step"], list(state["losses"])
        ctx.log(f"resumed from the checkpoint at step {step}")
    x, y, _ = data["train"]
    vals: list[tuple[int, float]] = []
    stopped = False
    while step < params.steps:
        if ctx.should_stop():
            stopped = True
            break
        if params.batch_size is None or params.batch_size >= len(x):
            xb, yb = x, y
        else:
            idx = torch.randint(len(x), (params.batch_size,), generator=gen).to(device)
            xb, yb = x[idx], y[idx]
        losses.append(train_step(model, opt, xb, yb))
        step += 1
        ctx.metric("loss", losses[-1], step)
        if step % params.eval_every == 0 or step == params.steps:
            vals.append((step, evaluate(model, *data["val"][:2])))
            ctx.metric("val_mse", vals[-1][1], step)
            ctx.progress(step, params.steps)
        if step % params.checkpoint_every == 0:
            save_checkpoint(ctx, model, opt, step, params, losses)
    save_checkpoint(ctx, model, opt, step, params, losses)
    final_mse = evaluate(model, *data["val"][:2])
    plot(ctx, model, data, losses, vals)
    xv, _, clean = data["val"]
    result = {
        "steps": step,
        "final_train_loss": losses[-1] if losses else None,
        "final_mse": final_mse,
        "mse_to_true_curve": evaluate(model, xv, clean),
        "noise_variance": data["noise_variance"],
        "ratio": final_mse / data["noise_variance"],
        "stopped_early": stopped,
    }
    ctx.log(f"val MSE {final_mse:.4g} = {result['ratio']:.2f} x the noise variance")
    return result


KIND = JobKind(
    name="regression",
    params=Params,
    run=run,
    summary="A small MLP fits a noisy curve; its MSE approaches the noise variance",
)
