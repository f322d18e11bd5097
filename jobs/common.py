"""Small helpers every job kind shares: seeding and the torch device."""

from __future__ import annotations

import os
import random
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, Field


def seed_everything(seed: int) -> Any:
    """Seed Python, numpy and torch; return a torch.Generator seeded the same way.

    A seed makes a run repeatable on the same kind of device, not identical between CPU
    and GPU.
    """
    import numpy as np
    import torch

    # cuBLAS needs a fixed workspace to be deterministic; it is read when CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def torch_device(ctx: Any) -> Any:
    """The torch.device the job runs on (its one GPU is always cuda:0)."""
    import torch

    return torch.device(ctx.device)


def save_figure(fig: Any, path: Any, *, dpi: int = 100, tight: bool = False, pad: float | None = None) -> None:
    """Write a matplotlib figure to an artifact path and free it (pyplot keeps every open figure)."""
    import matplotlib.pyplot as plt

    try:
        if tight:
            fig.tight_layout(**({} if pad is None else {"pad": pad}))
        fig.savefig(path, dpi=dpi)
    finally:  # a full disk too: a warm worker otherwise keeps every figure it failed to save
        plt.close(fig)


def check_data_path(value: str) -> str:
    """The rule every data path on the lab's disk follows: absolute, no `..`, no control
    characters (a NUL cannot even be stored); returned in its normal form."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("a data path may not contain control characters")
    path = PurePosixPath(value)
    if not path.is_absolute():
        raise ValueError(f"{value!r} is not an absolute path (start it with /)")
    if ".." in path.parts:
        raise ValueError(f"{value!r} contains '..': name the folder itself")
    return str(path)


# A path to data on the lab's disk, as a job parameter (classify-digits' data_dir, char-rnn's text_path).
DataPath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(check_data_path)]
