"""What device a worker serves, learned without touching CUDA in the parent process.

The parent reads the GPU through NVML only: even `torch.cuda.is_available()` there would
break CUDA in every forked child. It pins the process to the card by UUID before torch
loads, so the job sees one GPU as cuda:0 and NVML and CUDA agree on which card it is.
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from service.errors import InvalidRequest
from service.models import DeviceKind
from service.scheduling.device_request import device_id, parse_worker_device


@dataclass
class DeviceInfo:
    id: str
    host: str
    kind: DeviceKind
    index: int | None
    name: str
    uuid: str | None
    memory_total_mb: int | None
    # The software a result depends on besides its code (torch, CUDA, cuDNN, driver...).
    runtime: dict[str, Any] = field(default_factory=dict)

    @property
    def torch_device(self) -> str:
        """The device string a job uses: the pinned GPU is always cuda:0."""
        return "cuda:0" if self.kind == DeviceKind.cuda else "cpu"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class DeviceError(RuntimeError):
    """The device a worker was asked to serve does not exist or cannot be read."""


def cpu_info(host: str, index: int | None = None) -> DeviceInfo:
    """The CPU as a device: its model name and the machine's memory.

    `cpu:N` lets one host expose several CPU devices (a gang of CPU ranks, say); each is
    the same CPU under its own id, and the job's threads are what divides it.
    """
    name = "CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    memory_mb = None
    with contextlib.suppress(ValueError, OSError):
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    local = "cpu" if index is None else f"cpu:{index}"
    return DeviceInfo(id=device_id(host, local), host=host, kind=DeviceKind.cpu, index=index,
                      name=f"{name} ({os.cpu_count()} threads)", uuid=None, memory_total_mb=memory_mb)


def _nvml() -> Any:
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def nvml_index(index: int, visible: str) -> int:
    """Where GPU `index` of the host is among the GPUs this process sees.

    A container that reserves some GPUs sees them renumbered from 0, in the order of
    NVIDIA_VISIBLE_DEVICES (a list of host indices); elsewhere the numbers agree.
    """
    host_indices = [v.strip() for v in visible.split(",") if v.strip()]
    if host_indices and all(v.isdigit() for v in host_indices):
        if str(index) not in host_indices:
            raise DeviceError(f"cuda:{index} is not among this container's GPUs ({visible})")
        return host_indices.index(str(index))
    return index


def gpu_info(host: str, index: int, visible: str = "") -> DeviceInfo:
    """A GPU's name, UUID and memory from NVML (PCI bus order, as CUDA_DEVICE_ORDER sets)."""
    try:
        nvml = _nvml()
    except Exception as exc:
        raise DeviceError(f"cuda:{index}: NVML is not available ({exc}); is the NVIDIA driver installed?") from exc
    count = nvml.nvmlDeviceGetCount()
    local = nvml_index(index, visible)
    if not 0 <= local < count:
        raise DeviceError(f"cuda:{index} does not exist: this machine has {count} GPU(s)")
    handle = nvml.nvmlDeviceGetHandleByIndex(local)
    name = nvml.nvmlDeviceGetName(handle)
    uuid = nvml.nvmlDeviceGetUUID(handle)
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    return DeviceInfo(id=device_id(host, f"cuda:{index}"), host=host, kind=DeviceKind.cuda, index=index,
                      name=name if isinstance(name, str) else name.decode(),
                      uuid=uuid if isinstance(uuid, str) else uuid.decode(),
                      memory_total_mb=int(mem.total // 2**20))


def count_gpus() -> int:
    """How many GPUs NVML sees (0 without a driver)."""
    try:
        return int(_nvml().nvmlDeviceGetCount())
    except Exception:
        return 0


def resolve_device(spec: str, host: str, visible: str = "") -> DeviceInfo:
    """`cpu`, `cpu:N` or `cuda:N` (the device-request grammar, one device of this host) → its description."""
    try:
        kind, index = parse_worker_device(spec, host=host)
    except InvalidRequest as exc:
        raise DeviceError(exc.detail) from None
    if kind == DeviceKind.cpu:
        return cpu_info(host, index)
    assert index is not None  # a GPU is always named by its index
    return gpu_info(host, index, visible)


def pin_process(info: DeviceInfo) -> None:
    """Make this process (and its children) see only this device. Call before torch loads."""
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    # Lets torch answer is_available() from NVML, so nothing in the parent creates a context.
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    os.environ["CUDA_VISIBLE_DEVICES"] = info.uuid if info.kind == DeviceKind.cuda and info.uuid else ""


# What the worker reports about its software: what torch.utils.collect_env gathers, read
# without running a subprocess (collect_env runs nvidia-smi, gcc, pip) and without touching
# CUDA in the parent. The parent reads torch.version and NVML; a child, which owns a CUDA
# context anyway, adds what only the loaded libraries know (child_runtime_facts).


def _wheel_version(prefix: str) -> str | None:
    """The version of an installed NVIDIA library wheel (nvidia-cudnn-cu12, say), if any."""
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(prefix):
            return dist.version
    return None


def _os_name() -> str:
    with contextlib.suppress(OSError):
        return platform.freedesktop_os_release().get("PRETTY_NAME", "")
    return ""


def runtime_facts(info: DeviceInfo) -> dict[str, Any]:
    """The worker's software, read in the parent: torch.version, installed wheels and NVML only."""
    import numpy
    import torch

    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_git": torch.version.git_version,
        # The CUDA runtime torch was built with; a pip build ships and loads this one.
        "cuda_runtime": torch.version.cuda,
        "cudnn": _wheel_version("nvidia-cudnn"),
        "nccl": _wheel_version("nvidia-nccl"),
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "os": _os_name(),
        # Flags, not CUDA calls: reading them creates no context.
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if torch.version.hip:
        facts["hip"] = torch.version.hip
    if info.kind == DeviceKind.cuda:
        facts.update(_nvml_facts(info))
    return facts


def _nvml_facts(info: DeviceInfo) -> dict[str, Any]:
    facts: dict[str, Any] = {"memory_total_mb": info.memory_total_mb}
    try:
        nvml = _nvml()
        handle = nvml.nvmlDeviceGetHandleByUUID(info.uuid)
        driver = nvml.nvmlSystemGetDriverVersion()
        facts["driver"] = driver if isinstance(driver, str) else driver.decode()
        cuda_driver = nvml.nvmlSystemGetCudaDriverVersion()  # e.g. 12080 for 12.8
        facts["cuda_driver"] = f"{cuda_driver // 1000}.{cuda_driver % 1000 // 10}"
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        facts["compute_capability"] = f"{major}.{minor}"
    except Exception as exc:  # an old driver lacks a call: report what could be read
        facts["nvml_error"] = str(exc)
    return facts


def _cudnn_version(v: int) -> str:
    # cuDNN 9 numbers its versions major*10000 + minor*100 + patch; cuDNN 8, major*1000 + ...
    major, rest = (v // 10000, v % 10000) if v >= 90000 else (v // 1000, v % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def child_runtime_facts(info: DeviceInfo) -> dict[str, Any]:
    """What only a process with torch's libraries loaded can say: call it in a child, where
    the job's CUDA context already exists (never in the worker parent)."""
    import torch

    facts: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if info.kind == DeviceKind.cuda and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        facts["compute_capability"] = f"{major}.{minor}"
        if (cudnn := torch.backends.cudnn.version()) is not None:
            facts["cudnn"] = _cudnn_version(cudnn)
        with contextlib.suppress(Exception):  # a build without NCCL
            from torch.cuda import nccl as nccl_lib

            nccl = nccl_lib.version()
            facts["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    return facts
