"""What a job asks for: a device id, `cuda:N`, any GPU, a GPU model, free memory, or the CPU.

Forms (case-insensitive keywords), one grammar for `POST /jobs`'s `device` and for
`gpulab worker --device` (which must name one device of its own host):
    cpu                      any CPU device (a worker: this host's CPU)
    gpu                      any GPU
    cuda:1, cpu:1            GPU 1 / CPU device 1 of the default host
    lab2/cuda:1, lab2/cpu    an exact device id
    model=H100               a GPU whose name contains "H100"
    min_memory_gb=40         a GPU with at least 40 GB free for this job
    model=H100,min_memory_gb=40   both

A request is parsed once, at submit, and stored in the job's `request_*` columns; the
dispatcher reads those columns and never parses text again.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from service.errors import InvalidRequest
from service.models import DeviceKind

_LOCAL = re.compile(r"^(cpu|cuda)(?::(\d{1,3}))?$")
_DEVICE_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,127})/((?:cpu|cuda)(?::\d{1,3})?)$", re.IGNORECASE)
_HELP = "use cpu, gpu, cuda:N, cpu:N, HOST/cuda:N, model=NAME or min_memory_gb=GB"


def device_id(host: str, local: str) -> str:
    """The stable id of a device: `<host>/cpu`, `<host>/cpu:<N>` or `<host>/cuda:<N>`."""
    return f"{host}/{local}"


class DeviceRequest(NamedTuple):
    """What a job asks for, parsed once at submit. A tuple: placement keys its caches by it, and a
    tuple's hash is computed in C (a frozen dataclass's, in Python, was a tenth of a 10,000-job pass)."""

    kind: DeviceKind
    device_id: str | None = None
    model: str | None = None
    min_memory_gb: float | None = None

    def canonical(self) -> str:
        """The request written back in one normal form (what the job row shows)."""
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

    def columns(self) -> dict[str, Any]:
        """The job row's fields for this request: the text shown and the structured columns."""
        return {"device_request": self.canonical(), "request_kind": self.kind,
                "request_device_id": self.device_id, "request_model": self.model,
                "request_min_memory_gb": self.min_memory_gb}

    @classmethod
    def from_columns(cls, kind: str, device_id: str | None, model: str | None,
                     min_memory_gb: float | None) -> DeviceRequest:
        """The request stored in a job row's `request_*` columns."""
        return cls(kind=DeviceKind(kind), device_id=device_id, model=model, min_memory_gb=min_memory_gb)

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


def request_fields(text: str, *, default_host: str = "") -> dict[str, Any]:
    """A job row's device fields from a request's text (for code that builds rows directly)."""
    return parse_device_request(text, default_host=default_host).columns()


def _local(kind: str, index: str | None) -> tuple[DeviceKind, str]:
    device_kind = DeviceKind(kind)
    if index is None:
        return device_kind, kind
    return device_kind, f"{kind}:{int(index)}"


def parse_device_request(text: str, *, default_host: str) -> DeviceRequest:
    """Parse a device request; raises InvalidRequest naming the field `device` and the value."""
    raw = text.strip()
    low = raw.lower()
    if low == "cpu":
        return DeviceRequest(kind=DeviceKind.cpu)
    if low in ("gpu", "cuda", "any-gpu"):
        return DeviceRequest(kind=DeviceKind.cuda)
    if m := _LOCAL.match(low):
        kind, local = _local(m[1], m[2])
        return DeviceRequest(kind=kind, device_id=device_id(default_host, local))
    if m := _DEVICE_ID.match(raw):
        local_match = _LOCAL.match(m[2].lower())
        assert local_match is not None  # the id pattern only admits what _LOCAL reads
        kind, local = _local(local_match[1], local_match[2])
        return DeviceRequest(kind=kind, device_id=device_id(m[1], local))
    if "=" in raw:
        return _parse_constraints(raw)
    raise InvalidRequest(f"device {raw!r} is not a device request: {_HELP}", field="device", value=raw)


def parse_worker_device(text: str, *, host: str) -> tuple[DeviceKind, int | None]:
    """`gpulab worker --device`: the same grammar, naming one device of this host → (kind, index)."""
    request = parse_device_request(text, default_host=host)
    if request.kind == DeviceKind.cpu and request.device_id is None:
        return DeviceKind.cpu, None
    prefix = f"{host}/"
    if request.device_id is None or not request.device_id.startswith(prefix):
        raise InvalidRequest(f"--device {text!r} must name one device of this host ({host}): "
                             "cpu, cpu:N or cuda:N", field="device", value=text)
    _, _, index = request.device_id[len(prefix):].partition(":")
    return request.kind, int(index) if index else None


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
