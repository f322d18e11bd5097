import pytest

from jobs.context import LocalContext
from jobs.device_compare import KIND, crossover, time_op

SMALL = {"sizes": [32, 64, 128], "repeats": 2}


def test_cpu_only_job_compares_thread_counts(ctx: LocalContext) -> None:
    import torch

    result = KIND.run(KIND.validate(SMALL), ctx)
    assert result["gpu"] is None and "no GPU" in result["note"]
    threads = torch.get_num_threads()
    assert set(result["series"]) == {"cpu_1_thread", f"cpu_{threads}_threads"}
    assert result["sizes"] == [32, 64, 128]
    for s in result["series"].values():
        for n, t, g in zip(result["sizes"], s["matmul_s"], s["matmul_gflops"], strict=True):
            assert g == pytest.approx(2 * n**3 / t / 1e9)
    assert result["direct_torch_gflops"] > 0 and result["largest_size"] == 128
    assert (ctx.dir / "device_compare.png").stat().st_size > 0
    assert torch.get_num_threads() == threads  # put back after the one-thread series


def test_timer_measures_a_known_sleep() -> None:
    import time

    import torch

    assert time_op(lambda: time.sleep(0.003), torch.device("cpu"), 3) == pytest.approx(0.003, abs=2e-3)


def test_crossover_is_where_speedup_stays_above_one() -> None:
    assert crossover([1, 2, 4, 8], [0.5, 1.2, 0.9, 3.0]) == 8
    assert crossover([1, 2, 4], [1.5, 2.0, 3.0]) == 1
    assert crossover([1, 2], [0.5, 0.7]) is None


@pytest.mark.gpu
def test_gpu_against_cpu_matches_direct_torch(gpu_ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({"sizes": [256, 1024, 2048], "repeats": 5}), gpu_ctx)
    assert result["gpu"]
    assert set(result["series"]) == {"cpu", "gpu", "gpu_with_copies"}
    assert result["kind_gflops"] == pytest.approx(result["direct_torch_gflops"], rel=0.05)
    assert result["speedup"]["gpu_matmul"][-1] > 1.0
