"""features: what a trained network computes inside. A forward hook on a named layer of a
classify-digits job's network records its activations over the data set, saved as an
artifact; and a small model that applies one nn.Linear twice shows that the two uses share
a single set of parameters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.base import JobContext, JobError, JobKind
from jobs.common import seed_everything, torch_device


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_job: int = Field(ge=1, description="a succeeded classify-digits job")
    layer: str = Field(default="fc1", min_length=1, max_length=64, description="a module name, e.g. conv2")
    split: Literal["train", "test", "all"] = "test"
    format: Literal["npy", "pt"] = "npy"
    max_samples: int = Field(default=2000, ge=1, le=100_000)
    batch_size: int = Field(default=512, ge=1, le=65_536)


def extract(model: Any, layer: str, x: Any, batch_size: int, ctx: JobContext) -> tuple[Any, bool]:
    """The layer's outputs for every row of x, captured by a forward hook; (acts, stopped)."""
    import torch

    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        raise JobError(f"layer {layer!r} is not in the network: {sorted(n for n in modules if n)}")
    captured: list[Any] = []
    # The hook sees the module's output as the forward pass runs; the model needs no change.
    handle = modules[layer].register_forward_hook(lambda _m, _inp, out: captured.append(out.detach()))
    stopped = False
    try:
        model.eval()
        with torch.no_grad():
            for i, start in enumerate(range(0, len(x), batch_size)):
                if ctx.should_stop():
                    stopped = True
                    break
                model(x[start : start + batch_size])
                ctx.progress(i + 1, -(-len(x) // batch_size))
    finally:
        handle.remove()
    return (torch.cat(captured) if captured else x.new_zeros(0)), stopped


def shared_weights(device: Any) -> dict[str, Any]:
    """One nn.Linear called twice in a forward pass: one weight tensor, one parameter set."""
    from jobs.nets import SharedTwice

    model = SharedTwice().to(device)
    ptrs: list[int] = []
    model.shared.register_forward_hook(lambda m, _inp, _out: ptrs.append(m.weight.data_ptr()))
    model(model.inp.weight.new_zeros(4, model.inp.in_features))
    count = sum(w.numel() for w in model.parameters())
    shared = sum(w.numel() for w in model.shared.parameters())
    return {
        "model": "inp -> shared -> shared -> out",
        "calls_of_shared_layer": len(ptrs),
        "same_weight_each_call": len(set(ptrs)) == 1,
        "parameter_tensors": len(list(model.parameters())),
        "parameters": count,
        "parameters_if_not_shared": count + shared,
        "state_dict_keys": list(model.state_dict()),
    }


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # torch is imported here, not at module level: the API imports this module to list kinds.
    import numpy as np
    import torch

    from jobs.classify_digits import load_trained

    seed_everything(ctx.seed)
    device = torch_device(ctx)
    model, _, data = load_trained(ctx, params.from_job, device)
    parts = ["train", "test"] if params.split == "all" else [params.split]
    x = torch.cat([data[f"x_{s}"] for s in parts])[: params.max_samples]
    y = torch.cat([data[f"y_{s}"] for s in parts])[: params.max_samples]
    acts, stopped = extract(model, params.layer, x, params.batch_size, ctx)
    name = f"features_{params.layer.replace('.', '_')}.{params.format}"
    path = ctx.artifact_path(name, "application/x-npy" if params.format == "npy" else "application/octet-stream")
    if params.format == "npy":
        np.save(path, acts.cpu().numpy())
        np.save(ctx.artifact_path("labels.npy", "application/x-npy"), y[: len(acts)].cpu().numpy())
    else:
        torch.save({"features": acts.cpu(), "labels": y[: len(acts)].cpu(), "layer": params.layer}, path)
    flat = acts.flatten(1) if len(acts) else acts
    ctx.log(f"saved {params.layer} activations {list(acts.shape)} to {name}")
    return {
        "from_job": params.from_job,
        "layer": params.layer,
        "split": params.split,
        "artifact": name,
        "shape": list(acts.shape),
        "samples": len(acts),
        "mean": flat.mean().item() if len(acts) else None,
        "std": flat.std().item() if len(acts) else None,
        "fraction_positive": (flat > 0).float().mean().item() if len(acts) else None,
        "shared_weights": shared_weights(device),
        "stopped_early": stopped,
    }


KIND = JobKind(
    name="features",
    params=Params,
    run=run,
    summary="Save a layer's activations (forward hook) from a classify-digits job; shared weights",
    from_job_param="from_job",
)
