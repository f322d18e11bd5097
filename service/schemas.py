"""Request and response models of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(max_length=64, examples=["regression"])
    params: dict[str, Any] = Field(default_factory=dict)
    device: str = Field("cpu", max_length=200,
                        description="cpu, gpu, cuda:N, HOST/cuda:N, model=NAME, min_memory_gb=GB")
    priority: int = Field(0, ge=-100, le=100, description="members up to 0; admins above")
    timeout_s: int | None = Field(None, ge=1, description="time limit; default from the settings")
    gpu_memory_gb: float | None = Field(None, gt=0, le=4096, description="declared GPU memory: lets a job share a GPU")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    max_attempts: int | None = Field(None, ge=1, le=20)


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    owner: str
    kind: str
    params: dict[str, Any]
    device_request: str
    priority: int
    gpu_memory_gb: float | None
    timeout_s: int
    seed: int
    status: str
    reason: str | None
    error: str | None
    attempt: int
    runs: int
    max_attempts: int
    device_id: str | None
    from_job_id: int | None
    created_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    cancelled_by: str | None
    result: dict[str, Any] | None
    peak_memory_mb: float | None
    run_seconds: float | None
    wait_seconds: float | None
    progress: dict[str, Any] | None = None


class JobPage(BaseModel):
    items: list[JobPublic]
    next_cursor: int | None


class EventPublic(BaseModel):
    seq: int
    attempt: int
    type: str
    message: str
    data: dict[str, Any] | None
    created_at: str | None


class EventPage(BaseModel):
    job_id: int
    status: str
    items: list[EventPublic]
    last_seq: int


class MetricPoint(BaseModel):
    name: str
    step: int | None
    value: float
    attempt: int


class ArtifactPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    content_type: str
    size_bytes: int
    created_at: datetime
    url: str


class JobKindPublic(BaseModel):
    name: str
    summary: str
    params_schema: dict[str, Any]
    enabled: bool


class DeviceJob(BaseModel):
    id: int
    owner: str
    kind: str
    status: str
    gpu_memory_gb: float | None


class DevicePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    host: str
    kind: str
    index: int | None
    name: str
    uuid: str | None
    memory_total_mb: int | None
    slots: int
    state: str
    worker_id: str | None
    last_seen_at: datetime | None
    jobs: list[DeviceJob] = []


class QueueEntry(BaseModel):
    position: int
    job_id: int
    owner: str
    kind: str
    device_request: str
    priority: int
    waiting_s: float
    reason: str | None
    next_device: str | None


class QueuePublic(BaseModel):
    dispatcher_active: bool
    items: list[QueueEntry]


class UserPublic(BaseModel):
    id: int
    name: str
    is_admin: bool


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}
