"""device-compare: matmul and an elementwise add timed on the CPU and on the job's GPU.

Timing done right: a warm-up call first (lazy init, kernel selection), several calls per
sample so a sample outlasts the timer's resolution and launch overhead, CUDA events on the
GPU (kernels run asynchronously, so a host clock alone times the launch), and the median
of the samples. On a CPU-only job it compares one torch thread with all of them instead.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.base import JobContext, JobKind
from jobs.common import save_figure, seed_everything, torch_device

MIN_SAMPLE_S = 2e-3
# Two ways of timing the same matmul differ a little by method (events or a host clock, calls
# back to back or one by one): below this they are taken to agree whatever the spread says.
METHOD_TOLERANCE = 0.10


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sizes: list[Annotated[int, Field(ge=8, le=8192)]] = Field(default=[64, 128, 256, 512], min_length=1, max_length=12)
    repeats: int = Field(default=5, ge=1, le=50)
    include_copies: bool = True


def _elapsed(fn: Callable[[], Any], calls: int, device: Any) -> float:
    """Seconds taken by `calls` back-to-back calls of fn."""
    import torch

    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - t0


def time_samples(fn: Callable[[], Any], device: Any, repeats: int) -> list[float]:
    """`repeats` samples of seconds per call of fn, after a warm-up."""
    _elapsed(fn, 1, device)
    calls = 1
    while (t := _elapsed(fn, calls, device)) < MIN_SAMPLE_S and calls < 4096:
        calls = min(4096, max(calls * 2, int(calls * MIN_SAMPLE_S / max(t, 1e-7)) + 1))
    return [_elapsed(fn, calls, device) / calls for _ in range(repeats)]


def time_op(fn: Callable[[], Any], device: Any, repeats: int) -> float:
    """Median seconds per call of fn, after a warm-up."""
    return statistics.median(time_samples(fn, device, repeats))


def spread(samples: list[float]) -> float:
    """How far apart repeated measurements fell: (max - min) / median."""
    return (max(samples) - min(samples)) / statistics.median(samples) if samples else 0.0


def judge_timing(kind_s: list[float], direct_s: list[float]) -> dict[str, Any]:
    """Whether the kind's matmul timing and the direct torch timing of the same size agree
    within the noise both measured; when not, something else ran on the machine meanwhile."""
    kind, direct = statistics.median(kind_s), statistics.median(direct_s)
    disagreement = abs(kind - direct) / min(kind, direct)
    noise = max(spread(kind_s) + spread(direct_s), METHOD_TOLERANCE)
    verdict: dict[str, Any] = {
        "repeats": len(kind_s),
        "kind_spread": spread(kind_s),
        "direct_spread": spread(direct_s),
        "disagreement": disagreement,
        "reliable": disagreement <= noise,
    }
    if not verdict["reliable"]:
        verdict["warning"] = (
            f"the machine was busy: this run's matmul timing and a direct torch timing of the same size "
            f"differ by {disagreement:.0%}, more than the {noise:.0%} their {len(kind_s)} repeats spread; "
            "the figures are unreliable, run it again when the device is idle"
        )
    return verdict


def direct_torch_times(n: int, device: Any, repeats: int) -> list[float]:
    """Seconds per n x n matmul timed the plain way, `repeats` times: a loop between two synchronizes."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    a @ b
    sync()
    iters = max(3, min(10_000, int(0.2 / repeats / max(time.perf_counter() - t0, 1e-7))))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        sync()
        out.append((time.perf_counter() - t0) / iters)
    return out


def measure(n: int, device: Any, copies: bool, repeats: int) -> tuple[list[float], list[float]]:
    """Samples of (matmul seconds, add seconds) at size n; with copies, inputs start and end on the host."""
    import torch

    host = [torch.randn(n, n) for _ in range(2)]
    if copies:

        def mm() -> Any:
            return (host[0].to(device) @ host[1].to(device)).cpu()

        def add() -> Any:
            return (host[0].to(device) + host[1].to(device)).cpu()
    else:
        a, b = (t.to(device) for t in host)

        def mm() -> Any:
            return a @ b

        def add() -> Any:
            return a + b

    return time_samples(mm, device, repeats), time_samples(add, device, repeats)


def crossover(sizes: list[int], speedups: list[float]) -> int | None:
    """The smallest size from which the faster side stays faster for every larger size."""
    for i, n in enumerate(sizes):
        if all(s > 1.0 for s in speedups[i:]):
            return n
    return None


def plot(path: Any, sizes: list[int], series: dict[str, dict[str, list[float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display inside a worker
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, s in series.items():
        done = sizes[: len(s["matmul_gflops"])]
        ax1.plot(done, s["matmul_gflops"], marker="o", label=name)
        ax2.plot(done, s["add_gbps"], marker="o", label=name)
    for ax, title in ((ax1, "matmul GFLOP/s"), (ax2, "elementwise add GB/s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("n (n x n, float32)")
        ax.set_title(title)
        ax.legend()
    save_figure(fig, path, tight=True)


def run(params: Params, ctx: JobContext) -> dict[str, Any]:
    # torch is imported here, not at module level: the API imports this module to list kinds.
    import torch

    seed_everything(ctx.seed)
    device = torch_device(ctx)
    has_gpu = device.type == "cuda" and torch.cuda.is_available()
    sizes = sorted(set(params.sizes))
    all_threads = torch.get_num_threads()
    cpu = torch.device("cpu")
    # name -> (device, torch threads, with host<->device copies)
    if has_gpu:
        plan = {"cpu": (cpu, all_threads, False), "gpu": (device, all_threads, False)}
        if params.include_copies:
            plan["gpu_with_copies"] = (device, all_threads, True)
        baseline, fast = "cpu", [k for k in plan if k != "cpu"]
    else:
        plan = {
            "cpu_1_thread": (cpu, 1, False),
            f"cpu_{all_threads}_threads": (cpu, all_threads, False),
        }
        baseline, fast = "cpu_1_thread", [f"cpu_{all_threads}_threads"]
    series: dict[str, dict[str, list[float]]] = {
        k: {"matmul_s": [], "add_s": [], "matmul_gflops": [], "add_gbps": []} for k in plan
    }
    last_matmul_samples: dict[str, list[float]] = {}
    stopped = False
    for i, n in enumerate(sizes):
        if ctx.should_stop():
            stopped = True
            break
        for name, (dev, threads, copies) in plan.items():
            torch.set_num_threads(threads)
            try:
                mm_samples, add_samples = measure(n, dev, copies, params.repeats)
            finally:
                torch.set_num_threads(all_threads)  # the process is shared: put it back
            mm_s, add_s = statistics.median(mm_samples), statistics.median(add_samples)
            last_matmul_samples[name] = mm_samples
            s = series[name]
            s["matmul_s"].append(mm_s)
            s["add_s"].append(add_s)
            s["matmul_gflops"].append(2 * n**3 / mm_s / 1e9)
            s["add_gbps"].append(3 * n * n * 4 / add_s / 1e9)  # read a, b; write the sum
            ctx.metric(f"{name}_matmul_gflops", s["matmul_gflops"][-1], step=n)
        ctx.progress(i + 1, len(sizes), f"n={n} done")
    done = sizes[: len(series[baseline]["matmul_s"])]
    speedup = {
        f"{name}_{op}": [b / f for b, f in zip(series[baseline][f"{op}_s"], series[name][f"{op}_s"], strict=True)]
        for name in fast
        for op in ("matmul", "add")
    }
    main = fast[0]
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(device) if has_gpu else None,
        "note": (
            f"GPU {device} against the CPU with {all_threads} threads"
            if has_gpu
            else f"no GPU: comparing 1 torch CPU thread with {all_threads}"
        ),
        "device": str(device),
        "dtype": "float32",
        "sizes": done,
        "baseline": baseline,
        "series": series,
        "speedup": speedup,
        "crossover_size": {k: crossover(done, v) for k, v in speedup.items()},
        "stopped_early": stopped,
    }
    if done:
        result["largest_size"] = done[-1]
        result["kind_gflops"] = series[main]["matmul_gflops"][-1]
        direct = direct_torch_times(done[-1], plan[main][0], params.repeats)
        result["direct_torch_gflops"] = 2 * done[-1] ** 3 / statistics.median(direct) / 1e9
        result["timing"] = judge_timing(last_matmul_samples[main], direct)
        if not result["timing"]["reliable"]:
            ctx.log(result["timing"]["warning"])
        plot(ctx.artifact_path("device_compare.png", "image/png"), sizes, series)
    return result


KIND = JobKind(
    name="device-compare",
    params=Params,
    run=run,
    summary="Time matmul and an elementwise op on CPU and GPU: GFLOP/s, speedups, crossover",
)
