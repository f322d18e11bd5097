"""The one place that reads the environment: every setting is `GPULAB_<NAME>`."""

from __future__ import annotations

import contextlib
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# `gpulab up`'s own Redis (state_dir/redis/url, 0600): its URL with the password, recorded by up.
OWN_REDIS_URL_FILE = "url"
# The password in a URL (redis://:PASSWORD@host, postgresql://user:PASSWORD@host): the user may be empty.
URL_PASSWORD = re.compile(r"//([^:/@\s]*):[^@/\s]*@")


def safe_url(url: str) -> str:
    """`url` with its password masked, fit to print or log."""
    return URL_PASSWORD.sub(r"//\1:***@", url)


class Settings(BaseSettings):
    """gpulab's configuration, validated at start: contradictions are refused with both values."""

    model_config = SettingsConfigDict(env_prefix="GPULAB_", extra="ignore", populate_by_name=True)

    state_dir: Path = Field(Path("~/.local/state/gpulab"), description="SQLite file, local Redis data")
    database_url: str = Field("", description="SQLAlchemy URL; default: a SQLite file in state_dir")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="broker and live events; unset: the Redis "
                           "`gpulab up` brought (state_dir/redis/url)")
    artifacts_dir: Path | None = Field(None, description="job artifacts; default: state_dir/artifacts")
    host: str = Field(default_factory=socket.gethostname,
                      description="host part of device ids (default: the hostname; containers must set it)")
    # Set by the NVIDIA container runtime: in a container that reserves GPU 1 only, NVML sees
    # that card at index 0, while the device id must stay <host>/cuda:1.
    nvidia_visible_devices: str = Field("", validation_alias="NVIDIA_VISIBLE_DEVICES",
                                        description="set by the NVIDIA container runtime; read, never set")

    # Job limits.
    default_timeout_s: int = Field(3600, ge=1, description="a job's time limit when it names none")
    max_timeout_s: int = Field(7 * 24 * 3600, ge=1, description="the longest time limit a job may ask")
    max_attempts: int = Field(3, ge=1, le=20, description="runs of a job before worker loss fails it")
    batch_max: int = Field(1000, ge=1, le=10_000, description="jobs one POST /jobs/batch may submit")
    cancel_grace_s: float = Field(10.0, ge=0, description="cooperative-stop time before a kill")

    # Sharing: fair share orders members by decayed usage; per-member limits (0 = unlimited).
    fair_share_half_life_s: float = Field(7 * 24 * 3600, ge=0, description="usage halves in weight this often")
    member_max_running_jobs: int = Field(0, ge=0, description="dispatched and running jobs per member")
    member_max_gpus: float = Field(0.0, ge=0, description="GPUs a member holds at once (shares add up)")
    member_max_pending_jobs: int = Field(0, ge=0, description="pending jobs per member; more are refused")

    # Celery/Redis. The visibility timeout must outlast the longest job, or Redis hands a
    # still-running job's message to another worker (the claim would refuse it, but it is waste).
    visibility_timeout_s: int = Field(8 * 24 * 3600, ge=1, description="Redis redelivers an unacked job after this")

    # Liveness.
    heartbeat_s: float = Field(5.0, gt=0, description="worker heartbeat period")
    worker_timeout_s: float = Field(30.0, gt=0, description="silence after which a worker is offline")
    dispatch_timeout_s: float = Field(120.0, gt=0, description="a dispatched job not claimed by then is re-dispatched")
    dispatcher_tick_s: float = Field(2.0, gt=0, description="dispatcher pass period without wake-ups")
    lease_s: float = Field(15.0, gt=0, description="dispatcher lease length")
    probe_s: float = Field(10.0, gt=0, description="a quiet worker probes its own queue this often")
    probe_timeout_s: float = Field(30.0, gt=0, description="a probe not back by then: the worker is restarted")

    # The API remembers whom a token belongs to for this long (0: it asks the database every
    # request): a revoked token, or a changed member, is seen by every request within it.
    token_cache_s: float = Field(2.0, ge=0, le=60, description="seconds the API trusts a token lookup")

    # Events are batched: flushed after this many seconds or lines, whichever comes first.
    event_flush_s: float = Field(0.5, gt=0, description="longest wait before a job's log lines are committed")
    event_flush_lines: int = Field(200, ge=1, description="log lines that trigger a commit sooner")

    # Workers.
    torch_threads: int = Field(0, ge=0, description="torch threads per CPU job child (0: torch's default)")
    # The old name of the switch (the `script` kind this replaced) is still read.
    enable_command_kind: bool = Field(False, validation_alias=AliasChoices("GPULAB_ENABLE_COMMAND_KIND",
                                                                          "GPULAB_ENABLE_SCRIPT_KIND"),
                                      description="allow the `command` kind (members' own code)")

    # Command jobs: bundles, run folders, outputs, accounts.
    bundles_dir: Path | None = Field(None, description="uploaded bundles; default: state_dir/bundles")
    runs_dir: Path | None = Field(None, description="command jobs' working folders; default: state_dir/runs")
    max_bundle_mb: int = Field(200, ge=1, description="the largest bundle (packed) a member may upload")
    bundle_keep_s: float = Field(7 * 86400, gt=0, description="a bundle no job used for this long is removed")
    max_output_mb: int = Field(2048, ge=0, description="a command job's outputs kept as artifacts, at most")
    command_user: str = Field("", description="one Unix account shared by unmapped members (root workers); "
                                              "empty: each has an account of its own")
    command_uid_base: int = Field(900_000_000, ge=1000, le=3_000_000_000,
                                  description="an unmapped member's own account is uid this + member id")
    command_server_dirs: str = Field("", description="folders (':'-separated) under which command jobs may run "
                                     "in place (server_dir); empty: none")

    # Device samples and usage.
    sample_s: float = Field(5.0, gt=0, description="how often a worker records its device's readings")
    samples_raw_keep_s: float = Field(86400, gt=0, description="raw readings kept this long, then minute averages")
    samples_minute_keep_s: float = Field(30 * 86400, gt=0, description="minute averages kept this long")
    idle_minutes: float = Field(30, gt=0, description="a GPU job near 0 % utilisation this long is flagged idle")
    idle_utilization_pct: float = Field(5, ge=0, le=100, description="'near 0 %' for the idle flag")
    metrics_public: bool = Field(True, description="serve /metrics without a token (for Prometheus)")
    metrics_dcgm_names: bool = Field(True, description="GPU gauges under DCGM exporter's names (false: gpulab_gpu_*)")
    celery_events: bool = Field(False, description="workers send Celery task events and heartbeats (for Flower)")

    # API.
    api_url: str = Field("http://127.0.0.1:8000", description="where the CLI finds the API")
    token: str = Field("", description="the CLI's bearer token (else the credentials file)")
    credentials_file: Path = Field(Path("~/.config/gpulab/token"), description="the CLI's saved token")
    sql_echo: bool = Field(False, description="log every SQL statement (debugging)")
    db_pool_size: int = Field(40, ge=1, le=1000,
                              description="database connections per process; the API admits this many "
                                          "requests to the database at once")

    # Whether GPULAB_REDIS_URL was given: without it, up never uses a Redis that asks no password.
    _redis_url_chosen: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _resolve_and_check(self) -> Settings:
        self.state_dir = self.state_dir.expanduser()
        self._redis_url_chosen = "redis_url" in self.model_fields_set
        if not self._redis_url_chosen:
            # The Redis `gpulab up` brought, found by every command of the service's account (its
            # parts, the admin commands, `celery -A worker.app`); another account cannot read it.
            with contextlib.suppress(OSError, UnicodeDecodeError):
                self.redis_url = (self.state_dir / "redis" / OWN_REDIS_URL_FILE).read_text().strip() or self.redis_url
        if not self.database_url:
            self.database_url = f"sqlite:///{self.state_dir / 'gpulab.sqlite3'}"
        if self.artifacts_dir is None:
            self.artifacts_dir = self.state_dir / "artifacts"
        self.artifacts_dir = self.artifacts_dir.expanduser()
        self.bundles_dir = (self.bundles_dir or self.state_dir / "bundles").expanduser()
        self.runs_dir = (self.runs_dir or self.state_dir / "runs").expanduser()
        if self.command_user in ("root", "0"):
            raise ValueError("GPULAB_COMMAND_USER=root: members' commands never run as root; "
                             "leave it empty (each unmapped member gets an account of its own)")
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError(
                f"GPULAB_DEFAULT_TIMEOUT_S={self.default_timeout_s} is longer than "
                f"GPULAB_MAX_TIMEOUT_S={self.max_timeout_s}"
            )
        if self.visibility_timeout_s <= self.max_timeout_s:
            raise ValueError(
                f"GPULAB_VISIBILITY_TIMEOUT_S={self.visibility_timeout_s} must be longer than "
                f"GPULAB_MAX_TIMEOUT_S={self.max_timeout_s}: Redis would hand a running job's "
                "message to a second worker"
            )
        if self.worker_timeout_s <= 2 * self.heartbeat_s:
            raise ValueError(
                f"GPULAB_WORKER_TIMEOUT_S={self.worker_timeout_s} must be longer than two "
                f"heartbeats (GPULAB_HEARTBEAT_S={self.heartbeat_s})"
            )
        if self.probe_timeout_s <= self.probe_s:
            raise ValueError(
                f"GPULAB_PROBE_TIMEOUT_S={self.probe_timeout_s} must be longer than "
                f"GPULAB_PROBE_S={self.probe_s}"
            )
        return self

    @property
    def artifacts_root(self) -> Path:
        """Where job artifacts live (resolved at start from state_dir when not set)."""
        return self.artifacts_dir or self.state_dir / "artifacts"

    @property
    def bundles_root(self) -> Path:
        """Where uploaded bundles live (resolved at start)."""
        return self.bundles_dir or self.state_dir / "bundles"

    @property
    def runs_root(self) -> Path:
        """Where command jobs' working folders live (resolved at start)."""
        return self.runs_dir or self.state_dir / "runs"

    @property
    def server_dirs(self) -> list[Path]:
        """The folders command jobs may run in place under (GPULAB_COMMAND_SERVER_DIRS)."""
        return [Path(p) for p in self.command_server_dirs.split(":") if p]

    @property
    def redis_url_chosen(self) -> bool:
        """Whether the admin named the broker (GPULAB_REDIS_URL) rather than leaving it to gpulab."""
        return self._redis_url_chosen

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def public(self) -> dict[str, Any]:
        """The settings as shown to admins: no secrets."""
        data = self.model_dump(mode="json")
        data.pop("token", None)
        for key in ("redis_url", "database_url"):
            data[key] = safe_url(data[key])
        return data


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
