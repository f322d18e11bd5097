"""gan: the classic small GAN: a generator learns to turn noise into samples of a 1-D
Gaussian, judged by a discriminator (loss "gan") or a Wasserstein critic (loss "wgan",
kept 1-Lipschitz by weight clipping or a gradient penalty)."""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.base import JobContext, JobKind
from jobs.common import save_figure, seed_everything, torch_device


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loss: Literal["gan", "wgan"] = "gan"
    wgan_mode: Literal["clip", "gp"] = "gp"
    target_mean: float = Field(default=4.0, ge=-10.0, le=10.0)
    target_std: float = Field(default=1.25, ge=0.1, le=5.0)
    noise_dim: int = Field(default=4, ge=1, le=64)
    hidden: int = Field(default=32, ge=4, le=512)
    steps: int = Field(default=1000, ge=1, le=100_000, description="generator updates")
    batch_size: int = Field(default=256, ge=8, le=65_536)
    lr: float = Field(default=1e-3, gt=0.0, le=0.1)
    n_critic: int = Field(default=5, ge=1, le=20, description="critic updates per step (wgan)")
    clip: float = Field(default=0.1, gt=0.0, le=1.0, description="weight clip (wgan clip)")
    r1_weight: float = Field(default=1.0, ge=0.0, le=100.0, description="gan")
    # Small: in 1-D a critic whose slope starts with the wrong sign must cross slope 0 to
    # turn round, and the two-sided penalty walls that off when it is large.
    gp_weight: float = Field(default=0.1, ge=0.0, le=100.0, description="wgan gp")
    average: float = Field(default=0.995, ge=0.0, lt=1.0, description="decay of the averaged generator reported")
    eval_every: int = Field(default=100, ge=1, le=100_000)
    standardize: bool = Field(default=True, description="train on (x - mean) / std of the real data")


def discriminator_loss(p: Params, d: Any, real: Any, fake: Any) -> Any:
    import torch
    import torch.nn.functional as F

    if p.loss == "gan":
        real = real.requires_grad_(p.r1_weight > 0)
        real_logit, fake_logit = d(real), d(fake)
        loss = F.binary_cross_entropy_with_logits(
            real_logit, torch.ones_like(real_logit)
        ) + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
        if p.r1_weight > 0:
            # R1: penalise D's slope on real data; without it the two players circle
            # the target instead of settling on it (Mescheder et al., 2018).
            (grad,) = torch.autograd.grad(real_logit.sum(), real, create_graph=True)
            loss = loss + p.r1_weight / 2 * (grad**2).sum(dim=1).mean()
        return loss
    loss = d(fake).mean() - d(real).mean()  # the critic maximises E[D(real)] - E[D(fake)]
    if p.wgan_mode == "gp":
        # Penalise the critic's gradient norm away from 1 on points between real and fake.
        t = torch.rand(len(real), 1, device=real.device)
        mid = (t * real + (1 - t) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(d(mid).sum(), mid, create_graph=True)
        loss = loss + p.gp_weight * ((grad.norm(dim=1) - 1) ** 2).mean()
    return loss


def generator_loss(p: Params, d: Any, fake: Any) -> Any:
    import torch
    import torch.nn.functional as F

    if p.loss == "gan":  # the non-saturating form: maximise log D(G(z))
        logit = d(fake)
        return F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
    return -d(fake).mean()


def train_step(p: Params, nets: dict[str, Any], sample_real: Any, noise: Any) -> tuple[float, float]:
    """Critic (or discriminator) updates, then one generator update: (d_loss, g_loss)."""
    import torch

    g, d, opt_g, opt_d = nets["g"], nets["d"], nets["opt_g"], nets["opt_d"]
    for _ in range(p.n_critic if p.loss == "wgan" else 1):
        opt_d.zero_grad(set_to_none=True)
        d_loss = discriminator_loss(p, d, sample_real(), g(noise()).detach())
        d_loss.backward()
        opt_d.step()
        if p.loss == "wgan" and p.wgan_mode == "clip":
            for w in d.parameters():
                w.data.clamp_(-p.clip, p.clip)
    opt_g.zero_grad(set_to_none=True)
    g_loss = generator_loss(p, d, g(noise()))
    g_loss.backward()
    opt_g.step()
    with torch.no_grad():
        for avg, w in zip(nets["g_avg"].parameters(), g.parameters(), strict=True):
            avg.lerp_(w, 1 - p.average)
    nets["sched_d"].step()
    nets["sched_g"].step()
    return d_loss.item(), g_loss.item()


def save_checkpoint(ctx: JobContext, nets: dict[str, Any], step: int, p: Params, scale: tuple[float, float]) -> None:
    """Both players, their optimizers and schedules, and the averaged generator."""
    import torch

    state = {k: v.state_dict() for k, v in nets.items()}
    arch = {"net": "MLP", "noise_dim": p.noise_dim, "hidden": p.hidden, "depth": 2}
    torch.save({**state, "step": step, "params": p.model_dump(), "arch": arch, "scale": list(scale)},
               ctx.checkpoint_path())


def generated_stats(g: Any, noise_dim: int, device: Any, scale: tuple[float, float]) -> tuple[Any, float, float]:
    """Samples of G in the data's units (undoing the standardisation), their mean and std."""
    import torch

    with torch.no_grad():
        x = g(torch.randn(20_000, noise_dim, device=device)).squeeze(1) * scale[1] + scale[0]
    return x, x.mean().item(), x.std().item()


def plot(path: Any, fake: Any, p: Params) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display inside a worker
    import matplotlib.pyplot as plt
    import numpy as np

    xs = np.linspace(p.target_mean - 4 * p.target_std, p.target_mean + 4 * p.target_std, 400)
    pdf = np.exp(-0.5 * ((xs - p.target_mean) / p.target_std) ** 2) / (p.target_std * np.sqrt(2 * np.pi))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(fake.cpu().numpy(), bins=80, density=True, alpha=0.6, label="generated")
    ax.plot(xs, pdf, "k", label=f"target N({p.target_mean}, {p.target_std}²)")
    ax.legend()
    save_figure(fig, path)


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # torch is imported here, not at module level: the API imports this module to list kinds.
    import torch

    from jobs.nets import MLP

    seed_everything(ctx.seed)
    device = torch_device(ctx)
    p = params
    g = MLP(p.noise_dim, p.hidden, 2, 1).to(device)
    # A Wasserstein critic must keep its slope away from the data, which tanh flattens.
    d = MLP(1, p.hidden, 2, 1, "leaky_relu" if p.loss == "wgan" else "tanh").to(device)
    # Adam with a short memory (beta1 = 0.5) keeps the two players from overshooting.
    betas = (0.5, 0.9) if p.loss == "wgan" else (0.5, 0.999)
    # An exponential moving average of G's weights damps the players' circling.
    g_avg = copy.deepcopy(g).requires_grad_(False)
    nets: dict[str, Any] = {
        "g": g,
        "g_avg": g_avg,
        "d": d,
        "opt_g": torch.optim.Adam(g.parameters(), lr=p.lr, betas=betas),
        "opt_d": torch.optim.Adam(d.parameters(), lr=p.lr, betas=betas),
    }
    # The learning rate falls linearly to zero so the players settle rather than circle.
    for k in ("g", "d"):
        nets[f"sched_{k}"] = torch.optim.lr_scheduler.LambdaLR(nets[f"opt_{k}"], lambda i: max(0.0, 1 - i / p.steps))
    # The players see the real data standardised by its own mean and std (estimated once from
    # 10^5 draws), so every target in the range is the same problem: N(0, 1) in their units.
    reference = p.target_mean + p.target_std * torch.randn(100_000, device=device)
    scale = (reference.mean().item(), reference.std().item()) if p.standardize else (0.0, 1.0)
    step = 0
    if (state := ctx.resume_state()) is not None:
        for k in nets:
            nets[k].load_state_dict(state[k])
        step, scale = state["step"], tuple(state["scale"])
        ctx.log(f"resumed from the checkpoint at step {step}")

    def sample_real() -> Any:
        real = p.target_mean + p.target_std * torch.randn(p.batch_size, 1, device=device)
        return (real - scale[0]) / scale[1]

    def noise() -> Any:
        return torch.randn(p.batch_size, p.noise_dim, device=device)

    history: list[dict[str, float]] = []
    stopped = False
    while step < p.steps:
        if ctx.should_stop():
            stopped = True
            break
        d_loss, g_loss = train_step(p, nets, sample_real, noise)
        step += 1
        if step % p.eval_every == 0 or step == p.steps:
            _, mean, std = generated_stats(g_avg, p.noise_dim, device, scale)
            history.append({"step": step, "mean": mean, "std": std})
            for name, value in (
                ("d_loss", d_loss),
                ("g_loss", g_loss),
                ("gen_mean", mean),
                ("gen_std", std),
            ):
                ctx.metric(name, value, step)
            ctx.progress(step, p.steps)
            save_checkpoint(ctx, nets, step, p, scale)
    save_checkpoint(ctx, nets, step, p, scale)
    fake, mean, std = generated_stats(g_avg, p.noise_dim, device, scale)
    plot(ctx.artifact_path("histogram.png", "image/png"), fake, p)
    ctx.log(f"generated mean {mean:.3f} (target {p.target_mean}), std {std:.3f} (target {p.target_std})")
    return {
        "loss": p.loss if p.loss == "gan" else f"wgan-{p.wgan_mode}",
        "steps": step,
        "target_mean": p.target_mean,
        "target_std": p.target_std,
        "generated_mean": mean,
        "generated_std": std,
        "mean_error": abs(mean - p.target_mean),
        "mean_error_in_stds": abs(mean - p.target_mean) / p.target_std,
        "std_relative_error": abs(std - p.target_std) / p.target_std,
        "history": history,
        "stopped_early": stopped,
    }


KIND = JobKind(
    name="gan",
    params=Params,
    run=run,
    summary="A 1-D GAN (or WGAN with clipping or gradient penalty) learns a Gaussian",
)
