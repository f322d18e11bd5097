"""Image data for the digit kinds: MNIST from IDX files on the lab's disk, else the 8x8
digits bundled with scikit-learn. Nothing here downloads anything."""

from __future__ import annotations

import gzip
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.base import JobError

# IDX type byte -> numpy dtype (big-endian, as the format stores it).
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> Any:
    """An IDX file (optionally gzipped) as a numpy array of its stored shape."""
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES:
        raise JobError(f"{path.name} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    if len(raw) - header != math.prod(dims) * dtype.itemsize:
        raise JobError(f"{path.name}: header says {dims}, but the data has another size")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise JobError(f"data_dir {data_dir} has no {stem} (or {stem}.gz)")


@dataclass
class Split:
    """Images as float32 (N, 1, side, side) in [0, 1] and int64 labels, as numpy arrays."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    source: str

    @property
    def side(self) -> int:
        return int(self.x_train.shape[-1])


def load_split(data_dir: str | None, seed: int, test_fraction: float) -> Split:
    """MNIST's own train/test files when data_dir is given, else a seeded split of digits."""
    import numpy as np

    if data_dir is not None:
        root = Path(data_dir)
        arrays = {k: read_idx(_find(root, stem)) for k, stem in MNIST_FILES.items()}
        for part in ("train", "test"):
            x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
            if x.ndim != 3 or x.shape[1] != x.shape[2] or len(x) != len(y):
                raise JobError(f"{part} files: images {x.shape} and labels {y.shape} do not match")
        scale = 255.0 if arrays["x_train"].dtype == np.uint8 else 1.0

        def images(a: Any) -> Any:
            return (a.astype(np.float32) / scale)[:, None]

        return Split(
            images(arrays["x_train"]),
            arrays["y_train"].astype(np.int64),
            images(arrays["x_test"]),
            arrays["y_test"].astype(np.int64),
            source="mnist",
        )
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = round(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Split(x[train], y[train], x[test], y[test], source="digits")


def to_device(split: Split, device: Any, mean: float | None = None, std: float | None = None) -> dict[str, Any]:
    """The split as tensors on the device, normalised by the training set's mean and std
    (or by those a checkpoint recorded, so a loaded network sees what it trained on)."""
    import torch

    mean = float(split.x_train.mean()) if mean is None else mean
    std = float(split.x_train.std()) if std is None else std
    out: dict[str, Any] = {"mean": mean, "std": std, "side": split.side, "source": split.source}
    for name in ("x_train", "x_test"):
        out[name] = ((torch.from_numpy(getattr(split, name)) - mean) / std).to(device)
    for name in ("y_train", "y_test"):
        out[name] = torch.from_numpy(getattr(split, name)).to(device)
    return out
