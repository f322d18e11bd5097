"""The database tables: the system of record for everything gpulab knows."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite keeps no zone of its own)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class JobStatus(enum.StrEnum):
    pending = "pending"
    dispatched = "dispatched"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class FailReason(enum.StrEnum):
    """Why a job failed; each code is stable and documented in the README."""

    user_error = "user_error"
    oom = "oom"
    timeout = "timeout"
    worker_lost = "worker_lost"
    invalid_params = "invalid_params"
    cancelled = "cancelled"
    # A command job's requirements.txt could not be installed into its environment.
    env_build_failed = "env_build_failed"
    disk_full = "disk_full"  # the job's folder ran out of space; no artifact of it is recorded


class DeviceKind(enum.StrEnum):
    """What a device is: a CUDA GPU or a CPU. A StrEnum, so rows and JSON keep the plain word."""

    cpu = "cpu"
    cuda = "cuda"


class DeviceState(enum.StrEnum):
    online = "online"
    offline = "offline"
    draining = "draining"
    # Its worker lives but does not consume its queue (its probe did not come back): nothing
    # is sent to it until a probe returns or the worker is restarted.
    stalled = "stalled"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # The Unix account a root worker runs this member's commands as (None: the default account).
    unix_user: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # sha256 of the token: the token itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Device(Base):
    __tablename__ = "devices"

    # "<host>/cpu" or "<host>/cuda:<N>": stable across restarts.
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # a DeviceKind
    index: Mapped[int | None]
    name: Mapped[str] = mapped_column(String(200), default="")
    uuid: Mapped[str | None] = mapped_column(String(64))
    memory_total_mb: Mapped[int | None] = mapped_column(BigInteger)
    slots: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default=DeviceState.offline)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    last_seen_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The worker's software (torch, CUDA runtime, cuDNN, NCCL, driver, compute capability,
    # TF32, Python, platform): set at its start, completed by its children's first job.
    runtime: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Worker(Base):
    """One start of a worker process: its id is new at every start (the incarnation)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    host: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int]
    slots: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]
    running_job_ids: Mapped[list[Any]] = mapped_column(default=list)
    # When the worker last received a message from its own queue (a probe or a job): the
    # proof that it consumes, not only that its process lives.
    probe_ok_at: Mapped[datetime | None]


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key"),
        Index("ix_jobs_status_priority", "status", "priority", "id"),
        Index("ix_jobs_device_status", "device_id", "status"),
        # GET /jobs pages newest first under each filter: each walks its index backwards from
        # the cursor and stops at the page's end, whatever the share of jobs that match.
        Index("ix_jobs_owner_id_id", "owner_id", "id"),
        Index("ix_jobs_kind_id", "kind", "id"),
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_batch_id_id", "batch_id", "id"),
        # Usage windows and fair share read the jobs that finished since a time (or not yet).
        Index("ix_jobs_finished_at", "finished_at"),
        # The jobs not folded yet (pending, running, just ended): what /metrics counts live and
        # the fold looks through; a few thousand entries, not the table, holding every column
        # both read: 10,000 pending jobs were read from the table (PostgreSQL scanned it whole).
        Index("ix_jobs_unfolded_covering", "kind", "status", "reason", "created_at", "started_at", "run_seconds",
              "finished_at", "id", sqlite_where=text("utilization_readings IS NULL"),
              postgresql_where=text("utilization_readings IS NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    device_request: Mapped[str] = mapped_column(String(200))  # the request as shown (canonical text)
    # The request parsed once at submit: the dispatcher reads these, never the text.
    request_kind: Mapped[str] = mapped_column(String(8))  # a DeviceKind
    request_device_id: Mapped[str | None] = mapped_column(String(200))
    request_model: Mapped[str | None] = mapped_column(String(64))
    request_min_memory_gb: Mapped[float | None] = mapped_column(Float)
    gpus: Mapped[int] = mapped_column(Integer, default=1)  # devices of one host at once (a gang above 1)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    gpu_memory_gb: Mapped[float | None] = mapped_column(Float)
    timeout_s: Mapped[int]
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    from_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    # The jobs of one POST /jobs/batch share it: the id of the batch's first job.
    batch_id: Mapped[int | None] = mapped_column(Integer)

    status: Mapped[str] = mapped_column(String(16), default=JobStatus.pending)
    reason: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    # The fencing token: every dispatch increments it; every worker write is conditional on it.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # Runs that a worker started (claims); worker loss retries while runs < max_attempts.
    runs: Mapped[int] = mapped_column(Integer, default=0)
    device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"))
    # Every device of its last placement, the leader (`device_id`) first: the allocations are
    # freed when it ends, and usage still reads a finished gang's utilisation on all of them.
    device_ids: Mapped[list[Any] | None] = mapped_column(JSON)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int | None]
    event_seq: Mapped[int] = mapped_column(Integer, default=0)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    cancel_requested_at: Mapped[datetime | None]
    cancelled_by: Mapped[str | None] = mapped_column(String(64))

    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    peak_memory_mb: Mapped[float | None] = mapped_column(Float)
    run_seconds: Mapped[float | None] = mapped_column(Float)
    # The leader device's utilisation readings over the run (count and sum), stored once the job
    # is final by service.accounting.rollups; NULL until then. /usage reads them instead of a month of samples.
    utilization_readings: Mapped[int | None] = mapped_column(Integer)
    utilization_sum: Mapped[float | None] = mapped_column(Float)
    # The software the job ran with (the device's runtime as its process saw it), so a
    # result can be reproduced.
    runtime: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Allocation(Base):
    """A device a job holds for one attempt. A gang holds N rows; the leader is the one it is sent to.

    Written in the transaction that dispatches the job and deleted by the transition that
    takes it out of dispatched/running, so a device is busy exactly while a row names it.
    """

    __tablename__ = "allocations"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True, index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    leader: Mapped[bool] = mapped_column(Boolean, default=False)
    rank: Mapped[int] = mapped_column(Integer, default=0)  # the device's place in the gang, bus order


class JobEvent(Base):
    """A log line, a progress step, a metric value or a status change, in per-job order."""

    __tablename__ = "job_events"
    # (job_id, type, seq): a job page reads its last log lines without walking its metric events.
    __table_args__ = (UniqueConstraint("job_id", "seq"), Index("ix_job_events_job_type_seq", "job_id", "type", "seq"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int]
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    type: Mapped[str] = mapped_column(String(16))  # log | progress | metric | status
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobMetric(Base):
    __tablename__ = "job_metrics"
    # Covering (value included): a chart's downsampling reads the index alone.
    __table_args__ = (Index("ix_job_metrics_job_name_step_value", "job_id", "name", "step", "value"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(100))
    step: Mapped[int | None]
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobMetricSummary(Base):
    """A final job's metric series as the chart shows them, downsampled once and kept.

    Valid while the job is still at this attempt and event count: a new attempt or a late
    event changes them, and the page aggregates live again until the summary is rewritten.
    """

    __tablename__ = "job_metric_summaries"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    event_seq: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(Integer)  # the chart size it was downsampled to
    series: Mapped[list[Any]] = mapped_column(JSON)  # MetricSeries as dicts, in name order
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobTally(Base):
    """Final jobs already folded (service.accounting.rollups), per (kind, status, reason): /metrics' counters
    are these plus a live count of the jobs not folded yet."""

    __tablename__ = "job_tallies"

    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)  # "" for none: a key cannot be NULL
    jobs: Mapped[int] = mapped_column(BigInteger)
    started: Mapped[int] = mapped_column(BigInteger)
    run_seconds: Mapped[float] = mapped_column(Float)
    timed: Mapped[int] = mapped_column(BigInteger)  # jobs with a run time (the duration histogram's count)
    duration_buckets: Mapped[list[int]] = mapped_column(JSON)  # per bucket of metrics.DURATION_BUCKETS
    latency_seconds: Mapped[float] = mapped_column(Float)
    latency_buckets: Mapped[list[int]] = mapped_column(JSON)  # per bucket of metrics.LATENCY_BUCKETS


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Installation(Base):
    """The one row that names this installation: its Redis queues and channels carry the id,
    so two installations sharing a Redis database never take each other's messages."""

    __tablename__ = "installation"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """A named lease (the dispatcher's): one holder at a time until it expires."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]


class DeviceSample(Base):
    """A reading of one device: raw every few seconds for a day, then minute averages for a month."""

    __tablename__ = "device_samples"
    __table_args__ = (
        Index("ix_device_samples_device_t", "device_id", "resolution", "t"),
        # A job's mean utilisation over its run, raw and minute readings together, from the index alone.
        Index("ix_device_samples_device_t_util", "device_id", "t", "utilization_pct"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    t: Mapped[datetime]
    resolution: Mapped[str] = mapped_column(String(8), default="raw")  # raw | minute
    utilization_pct: Mapped[float | None] = mapped_column(Float)
    memory_used_mb: Mapped[float | None] = mapped_column(Float)
    memory_total_mb: Mapped[float | None] = mapped_column(Float)
    temperature_c: Mapped[float | None] = mapped_column(Float)
    power_w: Mapped[float | None] = mapped_column(Float)
    # GPU memory held by processes that gpulab did not start (counts against free room).
    external_mb: Mapped[float | None] = mapped_column(Float)
    # [{pid, used_mb, gpulab, job_id}] for the raw samples of a GPU.
    processes: Mapped[list[Any] | None] = mapped_column(JSON)


class Bundle(Base):
    """A member's uploaded working directory: the file is stored once per sha256, a row per owner."""

    __tablename__ = "bundles"
    __table_args__ = (UniqueConstraint("sha256", "owner_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    files: Mapped[int] = mapped_column(Integer)
    unpacked_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow)


class PythonEnv(Base):
    """A Python environment an admin registered (a venv or conda prefix on the workers' disk)."""

    __tablename__ = "python_envs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
