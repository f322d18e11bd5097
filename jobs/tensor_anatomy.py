"""tensor-anatomy: what a tensor is made of (rank, shape, dtype, strides, bytes, device),
how it shares memory with numpy, and the errors that mixing dtypes or devices raises."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobs.base import JobContext, JobKind
from jobs.common import seed_everything, torch_device

DType = Literal["float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8", "bool"]
Shape = Annotated[list[Annotated[int, Field(ge=0, le=1024)]], Field(max_length=6)]
MAX_NUMEL = 1_000_000


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shapes: list[Shape] = Field(default=[[], [3], [2, 3], [2, 3, 4]], min_length=1, max_length=8)
    dtypes: list[DType] = Field(default=["float32", "int64"], min_length=1, max_length=8)

    @field_validator("shapes")
    @classmethod
    def _small_enough(cls, shapes: list[list[int]]) -> list[list[int]]:
        for shape in shapes:
            numel = 1
            for d in shape:
                numel *= d
            if numel > MAX_NUMEL:
                raise ValueError(f"shape {shape} has {numel} elements; at most {MAX_NUMEL}")
        return shapes


def _dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def describe(t: Any) -> dict[str, Any]:
    """The anatomy of one tensor, as plain data."""
    return {
        "rank": t.ndim,
        "axes": list(range(t.ndim)),
        "shape": list(t.shape),
        "dtype": _dtype_name(t),
        "device": str(t.device),
        "strides": list(t.stride()),
        "numel": t.numel(),
        "element_size": t.element_size(),
        "bytes": t.element_size() * t.numel(),
        "contiguous": t.is_contiguous(),
    }


def capture(op: str, operands: list[Any], fn: Any) -> dict[str, Any]:
    """Run `fn`; an error becomes data ({op, operands, error}), never an exception."""
    described = [f"{list(t.shape)} {_dtype_name(t)} on {t.device}" for t in operands]
    try:
        out = fn()
    except (RuntimeError, TypeError) as exc:
        return {"op": op, "operands": described, "error": str(exc).splitlines()[0]}
    result = describe(out) if hasattr(out, "shape") else repr(out)
    return {"op": op, "operands": described, "error": None, "result": result}


def round_trip() -> dict[str, Any]:
    """numpy -> torch -> numpy: from_numpy shares memory, so a write shows on both sides."""
    import numpy as np
    import torch

    arr = np.zeros(4, dtype=np.float32)
    t = torch.from_numpy(arr)
    t[0] = 7.0  # written through the tensor, read back through the array
    back = t.numpy()
    back[1] = 5.0  # written through the array .numpy() returned, read through the tensor
    copied = torch.tensor(arr)  # torch.tensor always copies
    copied[2] = 9.0
    return {
        "from_numpy_shares_memory": bool(arr[0] == 7.0),
        "numpy_back_shares_memory": bool(t[1].item() == 5.0),
        "torch_tensor_copies": bool(arr[2] == 0.0),
        "same_data_ptr": t.data_ptr() == arr.__array_interface__["data"][0],
        "array_after": arr.tolist(),
    }


def unsqueeze_examples(device: Any) -> list[dict[str, Any]]:
    import torch

    v = torch.arange(3, device=device)
    out = []
    for dim in (0, 1, -1):
        u = v.unsqueeze(dim)
        out.append(
            {
                "op": f"unsqueeze({dim})",
                "from": list(v.shape),
                "to": list(u.shape),
                "strides": list(u.stride()),
            }
        )
    col, row = v.unsqueeze(1), v.unsqueeze(0)
    out.append(
        {
            "op": "broadcast [3,1] + [1,3]",
            "from": [list(col.shape), list(row.shape)],
            "to": list((col + row).shape),
            "strides": list((col + row).stride()),
        }
    )
    return out


def dtype_errors(device: Any) -> list[dict[str, Any]]:
    import torch

    i = torch.ones(3, dtype=torch.int64, device=device)
    f = torch.full((3,), 0.5, device=device)
    b = torch.ones(2, 2, device=device)
    return [
        capture("int64 += float32 (in place)", [i, f], lambda: i.clone().add_(f)),
        capture("int64 + float32 (promotes)", [i, f], lambda: i + f),
        capture("torch.cat([3], [2,2])", [f, b], lambda: torch.cat([f, b])),
        capture("matmul float32 @ int64", [b, i[:2]], lambda: b @ i[:2]),
    ]


def device_errors(device: Any) -> list[dict[str, Any]]:
    import torch

    if device.type != "cuda" or not torch.cuda.is_available():
        return [{"op": "cpu + cuda", "operands": [], "error": "skipped: no GPU"}]
    c = torch.ones(3)
    g = torch.ones(3, device=device)
    scalar = torch.tensor(2.0)  # a 0-dim CPU tensor is allowed to meet a CUDA one
    return [
        capture("cpu + cuda", [c, g], lambda: c + g),
        capture("torch.cat([cpu, cuda])", [c, g], lambda: torch.cat([c, g])),
        capture("cuda + cpu 0-dim", [g, scalar], lambda: g + scalar),
    ]


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # torch is imported here, not at module level: the API imports this module to list kinds.
    import torch

    seed_everything(ctx.seed)
    device = torch_device(ctx)
    tensors = []
    total = len(params.shapes) * len(params.dtypes)
    for shape in params.shapes:
        for name in params.dtypes:
            dtype = getattr(torch, name)
            t = torch.zeros(shape, dtype=dtype, device=device)
            tensors.append(describe(t))
            ctx.progress(len(tensors), total)
    # A transposed view shares storage but walks it with swapped strides.
    m = torch.zeros(2, 3, device=device)
    views = {
        "tensor": describe(m),
        "transposed": describe(m.t()),
        "shares_storage": m.t().untyped_storage().data_ptr() == m.untyped_storage().data_ptr(),
    }
    result = {
        "device": str(device),
        "tensors": tensors,
        "views": views,
        "numpy_round_trip": round_trip(),
        "unsqueeze": unsqueeze_examples(device),
        "dtype_errors": dtype_errors(device),
        "device_errors": device_errors(device),
    }
    ctx.log(f"described {len(tensors)} tensors on {device}")
    return result


KIND = JobKind(
    name="tensor-anatomy",
    params=Params,
    run=run,
    summary="Rank, shape, dtype, strides and bytes of tensors; numpy sharing; dtype/device errors",
)
