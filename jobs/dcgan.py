"""dcgan: a small DCGAN (transposed convolutions up, strided convolutions down, batch norm,
LeakyReLU in the discriminator) learns to draw scikit-learn's 8x8 digits, upsampled to 16x16."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.base import JobContext, JobKind
from jobs.common import save_figure, seed_everything, torch_device


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=300, ge=1, le=100_000)
    batch_size: int = Field(default=64, ge=2, le=4096)
    noise_dim: int = Field(default=16, ge=1, le=256)
    width: int = Field(default=32, ge=4, le=256, description="channels of the first layer")
    # 5x the DCGAN paper's 2e-4: with a step budget this small, it draws digits by step 300.
    lr: float = Field(default=1e-3, gt=0.0, le=0.1)
    eval_every: int = Field(default=50, ge=1, le=100_000)


def load_images(device: Any) -> Any:
    """The bundled digits as (N, 1, 16, 16) in [-1, 1], the range of the generator's tanh."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    return (x * 2 - 1).to(device)


def train_step(nets: dict[str, Any], real: Any, noise: Any) -> tuple[float, float]:
    """One discriminator update, then one generator update (non-saturating loss)."""
    import torch
    import torch.nn.functional as F

    g, d = nets["g"], nets["d"]
    fake = g(noise)
    nets["opt_d"].zero_grad(set_to_none=True)
    real_logit, fake_logit = d(real), d(fake.detach())
    d_loss = F.binary_cross_entropy_with_logits(
        real_logit, torch.ones_like(real_logit)
    ) + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
    d_loss.backward()
    nets["opt_d"].step()
    nets["opt_g"].zero_grad(set_to_none=True)
    logit = d(fake)
    g_loss = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
    g_loss.backward()
    nets["opt_g"].step()
    return d_loss.item(), g_loss.item()


def mean_image_distance(g: Any, noise: Any, real_mean: Any) -> float:
    """RMS distance between the mean generated image and the mean real one: a crude,
    cheap sign the generator found where the ink goes."""
    import torch

    g.eval()
    with torch.no_grad():
        fake_mean = g(noise).mean(dim=0)
    g.train()
    return (fake_mean - real_mean).pow(2).mean().sqrt().item()


def save_grid(path: Any, g: Any, noise: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display inside a worker
    import matplotlib.pyplot as plt
    import torch

    g.eval()
    with torch.no_grad():
        images = g(noise[:64]).cpu().squeeze(1).numpy()
    g.train()
    fig, axes = plt.subplots(8, 8, figsize=(6, 6))
    for ax, img in zip(axes.flat, images, strict=False):
        ax.imshow(img, cmap="gray_r", vmin=-1, vmax=1)
        ax.axis("off")
    save_figure(fig, path, dpi=80, tight=True, pad=0.2)


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # torch is imported here, not at module level: the API imports this module to list kinds.
    import torch

    from jobs.nets import DCDiscriminator, DCGenerator

    gen = seed_everything(ctx.seed)
    device = torch_device(ctx)
    p = params
    real_all = load_images(device)
    real_mean = real_all.mean(dim=0)
    g = DCGenerator(p.noise_dim, p.width).to(device)
    d = DCDiscriminator(p.width).to(device)
    nets: dict[str, Any] = {
        "g": g,
        "d": d,
        "opt_g": torch.optim.Adam(g.parameters(), lr=p.lr, betas=(0.5, 0.999)),
        "opt_d": torch.optim.Adam(d.parameters(), lr=p.lr, betas=(0.5, 0.999)),
    }
    # Fixed noise: the sample grid and the distance compare the same draws across steps.
    fixed = torch.randn(256, p.noise_dim, generator=gen).to(device)
    start_distance = mean_image_distance(g, fixed, real_mean)
    step = 0
    if (state := ctx.resume_state()) is not None:
        for k in nets:
            nets[k].load_state_dict(state[k])
        step = state["step"]
        ctx.log(f"resumed from the checkpoint at step {step}")
    arch = {"net": "DCGAN", "noise_dim": p.noise_dim, "width": p.width, "side": 16}

    def save() -> None:
        state = {k: v.state_dict() for k, v in nets.items()}
        torch.save({**state, "step": step, "params": p.model_dump(), "arch": arch}, ctx.checkpoint_path())

    stopped = False
    d_loss = g_loss = float("nan")
    while step < p.steps:
        if ctx.should_stop():
            stopped = True
            break
        idx = torch.randint(len(real_all), (p.batch_size,), generator=gen).to(device)
        d_loss, g_loss = train_step(nets, real_all[idx], torch.randn(p.batch_size, p.noise_dim, device=device))
        step += 1
        ctx.metric("d_loss", d_loss, step)
        ctx.metric("g_loss", g_loss, step)
        if step % p.eval_every == 0 or step == p.steps:
            ctx.metric("mean_image_distance", mean_image_distance(g, fixed, real_mean), step)
            ctx.progress(step, p.steps)
            save()
    save()
    save_grid(ctx.artifact_path("samples.png", "image/png"), g, fixed)
    return {
        "steps": step,
        "images": len(real_all),
        "image_size": [16, 16],
        "final_d_loss": d_loss,
        "final_g_loss": g_loss,
        "start_mean_image_distance": start_distance,
        "mean_image_distance": mean_image_distance(g, fixed, real_mean),
        "stopped_early": stopped,
    }


KIND = JobKind(
    name="dcgan",
    params=Params,
    run=run,
    summary="A small DCGAN draws the 8x8 digits (upsampled to 16x16); a sample grid to look at",
)
