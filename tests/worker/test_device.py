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
