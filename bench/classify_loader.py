"""classify-digits training with the data kept on the device, beside a DataLoader loop.

    python bench/classify_loader.py [--device cuda:0] [--epochs 5] [--batch-size 64]

Same network (jobs.nets.DigitsNet), same optimizer, same number of steps, same batches'
sizes. "on-device" holds the whole data set as device tensors and indexes a fresh
permutation each epoch, as the classify-digits kind does; "dataloader" is the usual
DataLoader(TensorDataset) with num_workers=0 and each batch copied to the device. Prints
samples/s of each and their ratio (the goal on a GPU: on-device >= 1.4x the DataLoader).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a file from a checkout where gpulab is not installed: the tree's root holds `jobs`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL = 1.4


def make_model(side: int, device: Any, seed: int) -> tuple[Any, Any]:
    import torch

    from jobs.nets import DigitsNet

    torch.manual_seed(seed)
    model = DigitsNet(side).to(device)
    return model, torch.optim.Adadelta(model.parameters(), lr=1.0)


def step(model: Any, opt: Any, x: Any, y: Any) -> Any:
    import torch.nn.functional as F

    opt.zero_grad(set_to_none=True)
    loss = F.nll_loss(model(x), y)
    loss.backward()
    opt.step()
    return loss


def on_device(x: Any, y: Any, batch_size: int, device: Any, seed: int) -> Callable[[int], int]:
    """An epoch runner over device tensors; returns how many samples it trained on."""
    import torch

    xd, yd = x.to(device), y.to(device)
    model, opt = make_model(x.shape[-1], device, seed)
    gen = torch.Generator().manual_seed(seed)

    def epochs(n: int) -> int:
        model.train()
        for _ in range(n):
            order = torch.randperm(len(xd), generator=gen).to(device)
            for start in range(0, len(xd), batch_size):
                idx = order[start : start + batch_size]
                step(model, opt, xd[idx], yd[idx])
        return n * len(xd)

    return epochs


def with_dataloader(x: Any, y: Any, batch_size: int, device: Any, seed: int) -> Callable[[int], int]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    model, opt = make_model(x.shape[-1], device, seed)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, num_workers=0, generator=gen)

    def epochs(n: int) -> int:
        model.train()
        for _ in range(n):
            for xb, yb in loader:
                step(model, opt, xb.to(device, non_blocking=True), yb.to(device, non_blocking=True))
        return n * len(x)

    return epochs


def timed(run: Callable[[int], int], epochs: int, device: Any) -> float:
    """Samples per second over `epochs` epochs, after one untimed warm-up epoch."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(1)
    sync()
    t0 = time.perf_counter()
    samples = run(epochs)
    sync()  # the last kernels are still running when the loop returns
    return samples / (time.perf_counter() - t0)


def main() -> None:
    import torch

    from jobs.datasets import load_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each; the median counts")
    parser.add_argument("--data-dir", default=None, help="MNIST IDX files; default: the bundled 8x8 digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    split = load_split(args.data_dir, args.seed, 0.2)
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    steps = -(-len(x) // args.batch_size) * args.epochs
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{split.source}: {len(x)} images {split.side}x{split.side}, batch {args.batch_size}, "
        f"{args.epochs} epochs = {steps} steps per run, on {device} ({name}), torch {torch.__version__}"
    )

    rates: dict[str, list[float]] = {"on-device": [], "dataloader": []}
    runners = {
        "on-device": on_device(x, y, args.batch_size, device, args.seed),
        "dataloader": with_dataloader(x, y, args.batch_size, device, args.seed),
    }
    for _ in range(args.repeats):  # alternate, so drift in clocks or load hits both alike
        for label, run in runners.items():
            rates[label].append(timed(run, args.epochs, device))
    median = {label: statistics.median(r) for label, r in rates.items()}
    for label, r in rates.items():
        print(f"{label:>10}: {median[label]:10.0f} samples/s  (runs: {', '.join(f'{v:.0f}' for v in r)})")
    ratio = median["on-device"] / median["dataloader"]
    verdict = "met" if ratio >= GOAL else "not met"
    scope = "" if device.type == "cuda" else " (the goal is for a GPU; on a CPU it is for information)"
    print(f"     ratio: {ratio:.2f}x on-device / DataLoader; goal >= {GOAL}x: {verdict}{scope}")


if __name__ == "__main__":
    main()
