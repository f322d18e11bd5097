"""classify-digits: pytorch/examples' MNIST network on scikit-learn's 8x8 digits (or on
MNIST itself, from IDX files in `data_dir`).

The whole data set sits on the device as tensors and each epoch walks a fresh permutation
of it: no DataLoader, whose worker processes a prefork child cannot start anyway.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.base import JobContext, JobError, JobKind
from jobs.common import DataPath, seed_everything, torch_device


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: DataPath | None = Field(default=None, description="MNIST IDX files; None: bundled 8x8 digits")
    test_fraction: float = Field(default=0.2, ge=0.05, le=0.5, description="digits only")
    epochs: int = Field(default=20, ge=1, le=200)
    batch_size: int = Field(default=32, ge=1, le=8192)
    lr: float = Field(default=1.0, gt=0.0, le=10.0, description="Adadelta, as in the example")
    gamma: float = Field(default=0.9, gt=0.0, le=1.0, description="lr decay per epoch")
    hidden: int = Field(default=128, ge=8, le=4096)


def train_epoch(model: Any, opt: Any, data: dict[str, Any], batch_size: int, gen: Any) -> float:
    """One pass over a fresh permutation of the training set; the mean batch loss."""
    import torch
    import torch.nn.functional as F

    model.train()
    x, y = data["x_train"], data["y_train"]
    order = torch.randperm(len(x), generator=gen).to(x.device)
    total = 0.0
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        opt.zero_grad(set_to_none=True)
        loss = F.nll_loss(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / len(x)


def evaluate(model: Any, x: Any, y: Any, classes: int) -> dict[str, Any]:
    """Test loss, accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        out = model(x)
        pred = out.argmax(dim=1)
        confusion = torch.bincount(y * classes + pred, minlength=classes * classes)
        return {
            "test_loss": F.nll_loss(out, y).item(),
            "accuracy": (pred == y).float().mean().item(),
            "confusion": confusion.view(classes, classes).tolist(),
        }


def load_trained(ctx: JobContext, job_id: int, device: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """An earlier classify-digits job's network, its checkpoint, and its data split on the
    device, scaled as it was in training (finetune and features start from here)."""
    from jobs.datasets import load_split, to_device
    from jobs.nets import DigitsNet

    try:
        state = ctx.load_job_checkpoint(job_id)
    except FileNotFoundError:
        raise JobError(f"from_job {job_id} left no checkpoint (did it succeed?)") from None
    arch = state.get("arch", {})
    if arch.get("net") != "DigitsNet" or "data" not in state:
        raise JobError(f"from_job {job_id} is not a classify-digits job (its checkpoint holds {arch or 'no arch'})")
    model = DigitsNet(arch["side"], tuple(arch["channels"]), arch["hidden"], arch["classes"])
    model.load_state_dict(state["model"])
    d = state["data"]
    split = load_split(d["data_dir"], d["split_seed"], d["test_fraction"])
    return model.to(device), state, to_device(split, device, d["mean"], d["std"])


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # torch is imported here, not at module level: the API imports this module to list kinds.
    import torch

    from jobs.datasets import load_split, to_device
    from jobs.nets import DigitsNet

    gen = seed_everything(ctx.seed)
    device = torch_device(ctx)
    data = to_device(load_split(params.data_dir, ctx.seed, params.test_fraction), device)
    arch = {"side": data["side"], "channels": [32, 64], "hidden": params.hidden, "classes": 10}
    model = DigitsNet(arch["side"], tuple(arch["channels"]), arch["hidden"], arch["classes"])
    model = model.to(device)
    opt = torch.optim.Adadelta(model.parameters(), lr=params.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=params.gamma)
    epoch = 0
    if (state := ctx.resume_state()) is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["rng"])
        epoch = state["step"]
        ctx.log(f"resumed from the checkpoint after epoch {epoch}")
    ctx.log(f"{data['source']}: {len(data['x_train'])} train, {len(data['x_test'])} test images")
    stopped, report = False, None
    while epoch < params.epochs:
        if ctx.should_stop():
            stopped = True
            break
        train_loss = train_epoch(model, opt, data, params.batch_size, gen)
        sched.step()
        epoch += 1
        report = evaluate(model, data["x_test"], data["y_test"], arch["classes"])
        ctx.metric("loss", train_loss, epoch)
        ctx.metric("test_loss", report["test_loss"], epoch)
        ctx.metric("accuracy", report["accuracy"], epoch)
        ctx.progress(epoch, params.epochs, f"epoch {epoch}: accuracy {report['accuracy']:.4f}")
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": gen.get_state(),
                "step": epoch,
                "params": params.model_dump(),
                "arch": {"net": "DigitsNet", **arch},
                # How the data was split and scaled, so a finetune job tests on unseen images.
                "data": {
                    "data_dir": params.data_dir,
                    "split_seed": ctx.seed,
                    "test_fraction": params.test_fraction,
                    "mean": data["mean"],
                    "std": data["std"],
                },
            },
            ctx.checkpoint_path(),
        )
    if report is None:
        report = evaluate(model, data["x_test"], data["y_test"], arch["classes"])
    return {
        "source": data["source"],
        "train_size": len(data["x_train"]),
        "test_size": len(data["x_test"]),
        "epochs": epoch,
        **report,
        "stopped_early": stopped,
    }


KIND = JobKind(
    name="classify-digits",
    params=Params,
    run=run,
    summary="The MNIST example's convnet on 8x8 digits (or MNIST IDX files): accuracy, confusion",
)
