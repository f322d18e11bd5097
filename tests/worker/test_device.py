"""The worker's device: the CPU as a device, pinning, and GPU numbering inside containers."""

from __future__ import annotations

import os

import pytest

from worker.device import DeviceError, DeviceInfo, cpu_info, nvml_index, pin_process, resolve_device


def test_cpu_device() -> None:
    info = cpu_info("lab1")
    assert (info.id, info.kind, info.torch_device) == ("lab1/cpu", "cpu", "cpu")
    assert info.memory_total_mb and info.memory_total_mb > 0


def test_container_numbering() -> None:
    assert nvml_index(1, "") == 1
    assert nvml_index(1, "1") == 0  # a container reserving GPU 1 sees it at 0
    assert nvml_index(3, "1,3") == 1
    assert nvml_index(0, "all") == 0  # not a list of indices: numbers agree
    with pytest.raises(DeviceError, match="cuda:2"):
        nvml_index(2, "0,1")


def test_bad_device_spec() -> None:
    with pytest.raises(DeviceError, match="tpu"):
        resolve_device("tpu", "lab1")


def test_pinning_a_cpu_worker_hides_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    pin_process(DeviceInfo(id="h/cpu", host="h", kind="cpu", index=None, name="CPU", uuid=None, memory_total_mb=1))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    pin_process(DeviceInfo(id="h/cuda:1", host="h", kind="cuda", index=1, name="GPU", uuid="GPU-abc",
                           memory_total_mb=1))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-abc"
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"


def _no_cuda(*_: object, **__: object) -> None:
    raise AssertionError("the worker parent touched CUDA")


def test_runtime_facts_read_versions_without_touching_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    import torch

    from worker.device import runtime_facts

    # Any of these in the parent breaks CUDA in every forked child.
    for name in ("is_available", "init", "_lazy_init", "device_count", "get_device_capability"):
        monkeypatch.setattr(torch.cuda, name, _no_cuda)
    facts = runtime_facts(cpu_info("lab1"))
    assert facts["torch"] == torch.__version__ and facts["cuda_runtime"] == torch.version.cuda
    assert facts["python"] == platform.python_version() and facts["platform"].startswith(platform.system())
    assert facts["tf32_matmul"] is torch.backends.cuda.matmul.allow_tf32
    # A GPU that NVML cannot read (none here): the versions still come, with the reason.
    gpu = DeviceInfo(id="h/cuda:0", host="h", kind="cuda", index=0, name="GPU", uuid="GPU-x", memory_total_mb=1024)
    gpu_facts = runtime_facts(gpu)
    assert gpu_facts["torch"] == torch.__version__ and gpu_facts["memory_total_mb"] == 1024
    assert "driver" in gpu_facts or "nvml_error" in gpu_facts


def test_child_facts_on_the_cpu() -> None:
    import torch

    from worker.device import child_runtime_facts

    facts = child_runtime_facts(cpu_info("lab1"))
    assert facts["torch_threads"] == torch.get_num_threads() and "cudnn" not in facts


@pytest.mark.parametrize(("raw", "text"), [(91002, "9.10.2"), (8902, "8.9.2"), (90100, "9.1.0")])
def test_cudnn_version_numbers(raw: int, text: str) -> None:
    from worker.device import _cudnn_version

    assert _cudnn_version(raw) == text


@pytest.mark.gpu
def test_a_child_forked_after_the_report_still_runs_cuda() -> None:
    """The parent's report leaves CUDA untouched: a forked child initialises it and works."""
    import multiprocessing

    from worker.device import child_runtime_facts, count_gpus, gpu_info, pin_process, runtime_facts

    if count_gpus() == 0:
        pytest.skip("needs a CUDA GPU (run on a lent GPU machine)")
    info = gpu_info(os.uname().nodename, 0)
    pin_process(info)
    facts = runtime_facts(info)
    assert facts["compute_capability"] and facts["driver"]

    def child(q: multiprocessing.Queue[dict]) -> None:
        import torch

        torch.ones(1, device="cuda:0").sum().item()
        q.put(child_runtime_facts(info))

    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    seen = q.get(timeout=120)
    p.join(30)
    assert p.exitcode == 0 and seen["compute_capability"] == facts["compute_capability"] and seen["cudnn"]
