"""Fixtures for the job-kind tests: an in-process context, and the GPU skip."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from jobs.context import LocalContext


@pytest.fixture(autouse=True)
def _skip_gpu_tests_without_cuda(request: pytest.FixtureRequest) -> None:
    # Only gpu-marked tests under tests/jobs skip; the check imports torch, so it is lazy.
    if request.node.get_closest_marker("gpu") is None:
        return
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run on a lent GPU machine)")


@contextmanager
def one_thread() -> Iterator[None]:
    """The kinds' small models step faster on one thread, and far faster on a busy 2-core
    machine (measured for char-rnn: 62 ms a step on one thread, 1.2 s on two while other work
    ran); workers run jobs with one thread per child too (GPULAB_TORCH_THREADS)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture
def ctx(tmp_path: Path) -> LocalContext:
    return LocalContext(artifacts_root=tmp_path, job_id=1, seed=0)


@pytest.fixture
def gpu_ctx(tmp_path: Path) -> LocalContext:
    return LocalContext(artifacts_root=tmp_path, job_id=1, seed=0, device="cuda:0")


@pytest.fixture(scope="session")
def digits_jobs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts folder where job 1 is a finished classify-digits job (defaults, seed 0)."""
    from jobs.classify_digits import KIND

    root = tmp_path_factory.mktemp("digits_jobs")
    # A session fixture is set up before the autouse one above: without its own one thread, this
    # run took 64 s on the busy machine (the same run as a test: 3-5 s).
    with one_thread():
        KIND.run(KIND.validate({}), LocalContext(artifacts_root=root, job_id=1, seed=0))
    return root


_job_ids = itertools.count(100)


@pytest.fixture
def job_on_digits(digits_jobs_root: Path) -> LocalContext:
    """A fresh job beside the classify-digits job 1, so it can load that job's checkpoint."""
    return LocalContext(artifacts_root=digits_jobs_root, job_id=next(_job_ids), seed=0)
