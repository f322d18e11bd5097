from pathlib import Path

import pytest

from jobs.context import LocalContext
from jobs.device_compare import KIND, METHOD_TOLERANCE, crossover, judge_timing, time_op

SMALL = {"sizes": [32, 64, 128], "repeats": 2}


@pytest.fixture(autouse=True)
def one_torch_thread() -> None:
    """This kind compares one thread with all of them: keep the process's own setting."""


@pytest.mark.parametrize(("seed", "setting"), [(0, {}), (1, {"repeats": 4, "include_copies": False})])
def test_cpu_only_job_compares_thread_counts(tmp_path: Path, seed: int, setting: dict) -> None:
    import torch

    ctx = LocalContext(artifacts_root=tmp_path, job_id=1, seed=seed)
    result = KIND.run(KIND.validate({**SMALL, **setting}), ctx)
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
    timing = result["timing"]
    assert timing["repeats"] == KIND.validate({**SMALL, **setting}).repeats
    noise = max(timing["kind_spread"] + timing["direct_spread"], METHOD_TOLERANCE)
    assert timing["reliable"] is (timing["disagreement"] <= noise)
    assert ("warning" in timing) is not timing["reliable"]


def _times(gflops: list[float], n: int = 2048) -> list[float]:
    return [2 * n**3 / g / 1e9 for g in gflops]


def test_a_busy_machine_is_named_when_the_two_timings_disagree() -> None:
    # The run this check comes from: the kind said 174 GFLOP/s, its own direct timing 45.8.
    verdict = judge_timing(_times([172.0, 174.0, 176.0]), _times([45.0, 45.8, 46.5]))
    assert verdict["reliable"] is False and verdict["repeats"] == 3
    assert verdict["disagreement"] == pytest.approx(174.0 / 45.8 - 1, rel=1e-6)
    assert "machine was busy" in verdict["warning"] and "3 repeats" in verdict["warning"]


def test_timings_that_agree_within_their_noise_are_reliable() -> None:
    assert judge_timing(_times([100.0, 101.0]), _times([96.0, 97.0]))["reliable"] is True
    # Far apart, but each side itself scattered as widely: the noise covers it.
    noisy = judge_timing(_times([60.0, 120.0, 180.0]), _times([50.0, 90.0, 150.0]))
    assert noisy["kind_spread"] > 1 and noisy["reliable"] is True


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
