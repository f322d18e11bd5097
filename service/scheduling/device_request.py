"""What a job asks for: a device id, `cuda:N`, any GPU, a GPU model, free memory, or the CPU.

Forms (case-insensitive keywords):
    cpu                      any CPU device
    gpu                      any GPU
    cuda:1                   GPU 1 of the default host
    lab2/cuda:1, lab2/cpu    an exact device id
    model=H100               a GPU whose name contains "H100"
    min_memory_gb=40         a GPU with at least 40 GB free for this job
    model=H100,min_memory_gb=40   both
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.errors import InvalidRequest
from service.models import DeviceKind

_CUDA = re.compile(r"^cuda:(\d{1,3})$")
_DEVICE_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,127})/(cpu|cuda:\d{1,3})$")


def device_id(host: str, local: str) -> str:
    """The stable id of a device: `<host>/cpu` or `<host>/cuda:<N>`."""
    return f"{host}/{local}"


@dataclass(frozen=True)
class DeviceRequest:
    kind: DeviceKind
    device_id: str | None = None
    model: str | None = None
    min_memory_gb: float | None = None

    def canonical(self) -> str:
        """The request written back in one normal form (what the job row stores)."""
        if self.device_id:
            return self.device_id
        if self.kind == DeviceKind.cpu:
            return "cpu"
        parts = []
        if self.model:
            parts.append(f"model={self.model}")
        if self.min_memory_gb is not None:
            parts.append(f"min_memory_gb={self.min_memory_gb:g}")
        return ",".join(parts) or "gpu"

    def matches(self, *, device_id: str, kind: str, name: str, memory_total_mb: int | None) -> bool:
        """Whether a device of this description could ever run the job (free room aside)."""
        if self.device_id is not None:
            return device_id == self.device_id
        if kind != self.kind:
            return False
        if self.model and self.model.lower() not in name.lower():
            return False
        if self.min_memory_gb is not None:
            return (memory_total_mb or 0) >= self.min_memory_gb * 1024
        return True


def parse_device_request(text: str, *, default_host: str) -> DeviceRequest:
    """Parse a device request; raises InvalidRequest naming the field `device` and the value."""
    raw = text.strip()
    low = raw.lower()
    if low == "cpu":
        return DeviceRequest(kind=DeviceKind.cpu)
    if low in ("gpu", "cuda", "any-gpu"):
        return DeviceRequest(kind=DeviceKind.cuda)
    if m := _CUDA.match(low):
        return DeviceRequest(kind=DeviceKind.cuda, device_id=device_id(default_host, f"cuda:{int(m[1])}"))
    if m := _DEVICE_ID.match(raw):
        local = m[2].lower()
        return DeviceRequest(kind=DeviceKind.cpu if local == "cpu" else DeviceKind.cuda, device_id=f"{m[1]}/{local}")
    if "=" in raw:
        return _parse_constraints(raw)
    raise InvalidRequest(
        f"device {raw!r} is not a device request: use cpu, gpu, cuda:N, HOST/cuda:N, "
        "model=NAME or min_memory_gb=GB",
        field="device",
        value=raw,
    )


def _parse_constraints(raw: str) -> DeviceRequest:
    model: str | None = None
    min_gb: float | None = None
    for part in raw.split(","):
        key, _, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "model" and re.fullmatch(r"[A-Za-z0-9 ._-]{1,64}", value):
            model = value
        elif key == "min_memory_gb":
            try:
                min_gb = float(value)
            except ValueError:
                min_gb = -1.0
            if not 0 < min_gb <= 4096:
                raise InvalidRequest(
                    f"min_memory_gb={value!r} must be a number of GB above 0",
                    field="device",
                    value=raw,
                )
        else:
            raise InvalidRequest(
                f"device constraint {part.strip()!r} is unknown: use model=NAME or min_memory_gb=GB",
                field="device",
                value=raw,
            )
    return DeviceRequest(kind=DeviceKind.cuda, model=model, min_memory_gb=min_gb)
