"""finetune: start from a classify-digits job's network, freeze the layers named, put a
new head on it and train it for a new task from a few labelled images; the same network
trained from scratch on the same images for the same steps is the baseline it must beat."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.base import JobContext, JobError, JobKind
from jobs.common import seed_everything, torch_device

# New tasks on the same images: each maps a digit label to a new class.
TASKS = {"ge5": ("digit < 5", "digit >= 5"), "even": ("odd", "even")}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_job: int = Field(ge=1, description="a succeeded classify-digits job")
    task: Literal["ge5", "even"] = "ge5"
    freeze: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default=["conv1", "conv2"], max_length=8)
    train_samples: int = Field(default=60, ge=2, le=100_000, description="labelled images of the new task")
    steps: int = Field(default=40, ge=1, le=100_000)
    batch_size: int = Field(default=32, ge=1, le=4096)
    lr: float = Field(default=3e-3, gt=0.0, le=1.0)
    compare_scratch: bool = True


def relabel(y: Any, task: str) -> Any:
    return (y >= 5).long() if task == "ge5" else (y % 2 == 0).long()


def new_head(model: Any, freeze: list[str]) -> Any:
    """Swap the 10-way output layer for a 2-way one and freeze the named layers."""
    from torch import nn

    model.fc2 = nn.Linear(model.fc2.in_features, 2).to(model.fc2.weight.device)
    children = dict(model.named_children())
    for name in freeze:
        if name not in children:
            raise JobError(f"freeze names {name!r}, which is not a layer: {sorted(children)}")
        if name == "fc2":
            raise JobError("freeze names fc2, the new head: it must train")
        children[name].requires_grad_(False)
    return model


def optimizer(model: Any, p: Params) -> Any:
    import torch

    return torch.optim.Adam([w for w in model.parameters() if w.requires_grad], lr=p.lr)


def train(
    model: Any, opt: Any, data: tuple[Any, Any], p: Params, gen: Any, ctx: JobContext, metric: str, start: int = 0
) -> int:
    """Adam steps from `start` to `p.steps` on shuffled batches of data; the steps done."""
    import torch
    import torch.nn.functional as F

    x, y = data
    model.train()
    order, at = torch.randperm(len(x), generator=gen).to(x.device), 0
    for step in range(start + 1, p.steps + 1):
        if ctx.should_stop():
            return step - 1
        if at >= len(x):
            order, at = torch.randperm(len(x), generator=gen).to(x.device), 0
        idx = order[at : at + p.batch_size]
        at += p.batch_size
        opt.zero_grad(set_to_none=True)
        loss = F.nll_loss(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        ctx.metric(metric, loss.item(), step)
    return max(start, p.steps)


def accuracy(model: Any, x: Any, y: Any) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # torch is imported here, not at module level: the API imports this module to list kinds.
    import torch

    from jobs.classify_digits import load_trained
    from jobs.nets import DigitsNet

    gen = seed_everything(ctx.seed)
    device = torch_device(ctx)
    p = params
    model, source, data = load_trained(ctx, p.from_job, device)
    model = new_head(model, p.freeze)
    # A few labelled images of the new task, drawn from the source job's training images;
    # the test images are the source job's test split, which no network here has seen.
    pick = torch.randperm(len(data["x_train"]), generator=gen)[: p.train_samples].to(device)
    x, y = data["x_train"][pick], relabel(data["y_train"][pick], p.task)
    x_test, y_test = data["x_test"], relabel(data["y_test"], p.task)
    task = " vs ".join(TASKS[p.task])
    ctx.log(f"fine-tuning {ctx.checkpoint_source(p.from_job)}'s network on {task} from {len(x)} images")
    opt, start = optimizer(model, p), 0
    if (state := ctx.resume_state()) is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        ctx.log(f"resumed from the checkpoint at step {start}")
    steps = train(model, opt, (x, y), p, gen, ctx, "loss", start)
    arch = {**source["arch"], "classes": 2, "task": p.task}
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": steps,
            "params": p.model_dump(),
            "arch": arch,
            "data": source["data"],
        },
        ctx.checkpoint_path(),
    )
    frozen = sum(w.numel() for w in model.parameters() if not w.requires_grad)
    result: dict[str, Any] = {
        "from_job": p.from_job,
        "task": p.task,
        "classes": list(TASKS[p.task]),
        "frozen": p.freeze,
        "frozen_params": frozen,
        "trainable_params": sum(w.numel() for w in model.parameters()) - frozen,
        "train_samples": len(x),
        "test_samples": len(x_test),
        "steps": steps,
        "finetune_accuracy": accuracy(model, x_test, y_test),
        "stopped_early": steps < p.steps,
    }
    ctx.metric("finetune_accuracy", result["finetune_accuracy"], steps)
    if p.compare_scratch and not result["stopped_early"]:
        # The baseline: the same architecture, new weights, every layer trained.
        a = source["arch"]
        scratch = new_head(DigitsNet(a["side"], tuple(a["channels"]), a["hidden"]).to(device), [])
        scratch_steps = train(scratch, optimizer(scratch, p), (x, y), p, gen, ctx, "scratch_loss")
        result["scratch_accuracy"] = accuracy(scratch, x_test, y_test)
        result["gain_over_scratch"] = result["finetune_accuracy"] - result["scratch_accuracy"]
        result["stopped_early"] = scratch_steps < p.steps
        ctx.metric("scratch_accuracy", result["scratch_accuracy"], scratch_steps)
    ctx.log(f"accuracy on {len(x_test)} unseen images: fine-tuned {result['finetune_accuracy']:.3f}")
    return result


KIND = JobKind(
    name="finetune",
    params=Params,
    run=run,
    summary="Fine-tune a classify-digits network on a new task, against the same net from scratch",
    from_job_param="from_job",
)
