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
    gpus: int = Field(1, ge=1, le=64, description="devices of one host the job holds at once, each alone "
                                                  "(the device filters apply to every one)")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    max_attempts: int | None = Field(None, ge=1, le=20)


class JobBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobCreate] = Field(min_length=1, max_length=10_000,
                                  description="each as POST /jobs takes it; at most GPULAB_BATCH_MAX (1,000)")


class BundleSummary(BaseModel):
    sha256: str
    size_bytes: int | None = Field(description="None once the bundle expired")
    files: int | None


class CommandPublic(BaseModel):
    argv: list[str]
    env: dict[str, str]
    python_env: str = Field(description="a registered environment, or 'default' (the worker's own)")
    requeue: bool
    bundle: BundleSummary | None = Field(description="none: the command started in an empty folder")
    unix_user: str = Field(description="the account it ran as, or will run as on a root worker")


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    owner: str
    kind: str
    params: dict[str, Any]
    device_request: str
    gpus: int = 1
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
    batch_id: int | None = Field(None, description="the batch (POST /jobs/batch) it came in: its first job's id")
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
    command: CommandPublic | None = Field(None, description="command jobs (GET /jobs/{id}): what runs, and as whom")
    runtime: dict[str, Any] | None = None


class JobPage(BaseModel):
    items: list[JobPublic]
    next_cursor: int | None


class JobBatchPublic(BaseModel):
    batch_id: int
    jobs: list[JobPublic]


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


class LogPage(BaseModel):
    """A page of a job's log and status lines, oldest first, read from the end."""

    job_id: int
    status: str
    items: list[EventPublic]
    before: int | None = Field(description="pass as ?before= for the older page; null at the first line")
    last_seq: int = Field(description="the job's newest event: follow live from here (Last-Event-ID)")


class MetricSeriesPublic(BaseModel):
    """One metric by step: every value, or when `downsampled` the mean of each bucket with its min and max."""

    name: str
    count: int = Field(description="how many values the job recorded")
    downsampled: bool
    step: list[int | None]
    value: list[float]
    min: list[float] | None = None
    max: list[float] | None = None


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
    # The latest reading of the device (absent until its worker has sampled it).
    sampled_at: datetime | None = None
    utilization_pct: float | None = None
    memory_used_mb: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    external_mb: float | None = None
    # torch, CUDA runtime, cuDNN, NCCL, driver, compute capability, TF32, Python, platform.
    runtime: dict[str, Any] | None = None


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
    gpus: int = 1
    # A gang assembling: how many of the devices it holds are free now (of `gpus`).
    gang_ready: int | None = None


class QueuePublic(BaseModel):
    dispatcher_active: bool
    # Every pending job, and those the filter kept; `items` holds the first `limit` of those.
    total: int
    matching: int
    items: list[QueueEntry]


class UserPublic(BaseModel):
    id: int
    name: str
    is_admin: bool
    unix_user: str | None = Field(None, description="the account a root worker runs their commands as")


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}
    # /readyz: devices whose worker is online (a submit for another device is refused).
    devices_online: list[str] | None = None


class DeviceSamplePoint(BaseModel):
    t: datetime
    utilization_pct: float | None
    memory_used_mb: float | None
    memory_total_mb: float | None
    temperature_c: float | None
    power_w: float | None
    external_mb: float | None


class WorkerPublic(BaseModel):
    id: str
    device_id: str
    host: str
    pid: int
    slots: int
    started_at: datetime
    last_heartbeat_at: datetime
    heartbeat_age_s: float
    running_job_ids: list[int]


class JobUsagePublic(BaseModel):
    job_id: int
    owner: str
    kind: str
    status: str
    device_id: str | None
    device_kind: str | None
    share: float = Field(description="the fraction of its device the job holds (N for a gang of N devices)")
    device_ids: list[str] = Field(description="every device of its last placement, the leader first")
    wait_seconds: float | None
    run_seconds: float
    allocated_seconds: float = Field(description="share × run time")
    used_seconds: float | None = Field(description="allocated seconds × the mean utilisation of its devices")
    mean_utilization_pct: float | None
    peak_memory_mb: float | None
    memory_total_mb: int | None
    idle: bool = Field(description="a running GPU job near 0 % utilisation for the idle window")


class UsageRowPublic(BaseModel):
    key: str
    jobs: int
    outcomes: dict[str, int]
    gpu_hours: float
    gpu_used_hours: float
    cpu_hours: float
    cpu_used_hours: float
    mean_wait_s: float | None


class UsageReport(BaseModel):
    since: datetime
    until: datetime
    group_by: str
    rows: list[UsageRowPublic]
    idle_jobs: list[JobUsagePublic]
    idle_minutes: float


class TimelinePointPublic(BaseModel):
    t: datetime = Field(description="the step's end")
    queue_depth: int = Field(description="pending jobs at the step's end")
    running: int = Field(description="running jobs at the step's end")
    started: int
    mean_wait_s: float | None
    queue_depth_max: int = Field(description="the most jobs pending at any instant of the step")
    queue_depth_mean: float = Field(description="pending jobs, time-weighted mean over the step")
    running_max: int
    running_mean: float


class QueueTimeline(BaseModel):
    since: datetime
    until: datetime
    step_s: float
    points: list[TimelinePointPublic]


class BundlePublic(BaseModel):
    sha256: str
    size_bytes: int
    files: int
    unpacked_bytes: int
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime = Field(description="removed then unless a job uses it first")


class PythonEnvPublic(BaseModel):
    name: str
    path: str
    created_at: datetime
