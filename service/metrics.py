"""/metrics in the Prometheus text format, read from the database at each scrape.

Device gauges carry the names and labels of NVIDIA's DCGM exporter (DCGM_FI_DEV_GPU_UTIL with
gpu, UUID, device, modelName, Hostname), so existing GPU dashboards work unchanged, plus the
jobs and members running on each GPU (`hpc_job`, `member`, as DCGM exporter's HPC job mapping
labels them); with GPULAB_METRICS_DCGM_NAMES=false they are `gpulab_gpu_*` instead, for a lab
that runs the DCGM exporter too. The CPU device and gpulab's own numbers are `gpulab_*`.
The counters and histograms cover every job the database keeps (gpulab deletes no job): final
jobs from the tallies the dispatcher folds them into (service.accounting.rollups), the rest counted at the
scrape, read in one snapshot, so they only grow, as Prometheus counters must, and rate() works.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.accounting.rollups import DURATION_BUCKETS, LATENCY_BUCKETS, job_totals
from service.accounting.usage import idle_jobs
from service.db import Database
from service.models import Allocation, Device, DeviceKind, Job, JobStatus, User, Worker, utcnow
from service.settings import Settings
from service.store.samples import latest_samples

# A reading older than this is not shown: its worker is gone or stuck.
STALE = timedelta(minutes=5)
DCGM_LABELS = ["gpu", "UUID", "device", "modelName", "Hostname", "hpc_job", "member"]
# Our GPU gauges' names: DCGM exporter's, or gpulab's own when the exporter runs beside us.
GPU_NAMES = {
    "util": ("DCGM_FI_DEV_GPU_UTIL", "gpulab_gpu_utilization_percent"),
    "used": ("DCGM_FI_DEV_FB_USED", "gpulab_gpu_memory_used_mib"),
    "free": ("DCGM_FI_DEV_FB_FREE", "gpulab_gpu_memory_free_mib"),
    "temp": ("DCGM_FI_DEV_GPU_TEMP", "gpulab_gpu_temperature_celsius"),
    "power": ("DCGM_FI_DEV_POWER_USAGE", "gpulab_gpu_power_watts"),
}
GPU_DOCS = {"util": "GPU utilization (in %).", "used": "Framebuffer memory used (in MiB).",
            "free": "Framebuffer memory free (in MiB).", "temp": "GPU temperature (in C).",
            "power": "Power draw (in W)."}


def _histogram(name: str, doc: str, buckets: tuple[float, ...], count: int, total: float,
               cumulative: list[int]) -> HistogramMetricFamily:
    points = [(str(float(b)), int(c)) for b, c in zip(buckets, cumulative, strict=True)]
    points.append(("+Inf", int(count)))
    return HistogramMetricFamily(name, doc, buckets=points, sum_value=float(total))


def _sum_buckets(lists: list[list[int]]) -> list[int]:
    return [sum(column) for column in zip(*lists, strict=True)]


class GpulabCollector(Collector):
    def __init__(self, db: Database, settings: Settings):
        self.db = db
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        with self.db.reading() as session:
            if session.get_bind().dialect.name == "postgresql":
                # The tallies and the live count in one snapshot (rollups.job_totals); SQLite's
                # read transaction is one already.
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield from self._jobs(session)
            yield from self._devices(session)
            yield from self._workers(session)

    def _jobs(self, session: Session) -> Iterator[Metric]:
        totals = job_totals(session=session)
        submitted = CounterMetricFamily("gpulab_jobs_submitted", "Jobs submitted", labels=["kind"])
        started = CounterMetricFamily("gpulab_jobs_started", "Jobs that started running", labels=["kind"])
        run_seconds = CounterMetricFamily("gpulab_job_run_seconds", "Run time of finished jobs (in s)",
                                          labels=["kind"])
        for kind in sorted({r.kind for r in totals}):
            rows = [r for r in totals if r.kind == kind]
            submitted.add_metric([kind], sum(r.jobs for r in rows))
            started.add_metric([kind], sum(r.started for r in rows))
            run_seconds.add_metric([kind], sum(r.run_seconds for r in rows))
        finished = CounterMetricFamily("gpulab_jobs_finished", "Jobs that ended, by kind, status and reason",
                                       labels=["kind", "status", "reason"])
        for r in totals:
            if JobStatus(r.status).is_final:
                finished.add_metric([r.kind, r.status, r.reason], r.jobs)
        yield from (submitted, started, finished, run_seconds)
        counts = {status: sum(r.jobs for r in totals if r.status == status) for status in JobStatus}
        jobs = GaugeMetricFamily("gpulab_jobs", "Jobs by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts[status])
        yield jobs
        yield GaugeMetricFamily("gpulab_queue_depth", "Pending jobs", value=counts[JobStatus.pending])
        running = GaugeMetricFamily("gpulab_running_jobs", "Running jobs per member", labels=["member"])
        for name, n in session.execute(
            select(User.name, func.count(Job.id)).join(Job, Job.owner_id == User.id)
            .where(Job.status == JobStatus.running).group_by(User.name)
        ):
            running.add_metric([name], n)
        yield running
        yield _histogram("gpulab_job_duration_seconds", "Run time of finished jobs", DURATION_BUCKETS,
                         sum(r.timed for r in totals), sum(r.run_seconds for r in totals),
                         _sum_buckets([r.duration_buckets for r in totals]))
        yield _histogram("gpulab_dispatch_latency_seconds", "Submit to start, of every started job", LATENCY_BUCKETS,
                         sum(r.started for r in totals), sum(r.latency_seconds for r in totals),
                         _sum_buckets([r.latency_buckets for r in totals]))
        idle = GaugeMetricFamily("gpulab_idle_jobs", "Running GPU jobs near 0 % utilisation for the idle window",
                                 labels=["member"])
        by_member: dict[str, int] = {}
        for u in idle_jobs(session, idle_minutes=self.settings.idle_minutes,
                           idle_pct=self.settings.idle_utilization_pct):
            by_member[u.owner] = by_member.get(u.owner, 0) + 1
        for member, n in sorted(by_member.items()):
            idle.add_metric([member], n)
        yield idle

    def _devices(self, session: Session) -> Iterator[Metric]:
        devices = list(session.scalars(select(Device).order_by(Device.id)))
        samples = latest_samples(session=session)
        fresh = utcnow() - STALE
        up = GaugeMetricFamily("gpulab_device_up", "1 when the device's worker is online",
                               labels=["device", "host", "state"])
        which = 0 if self.settings.metrics_dcgm_names else 1
        gauges = {key: GaugeMetricFamily(names[which], GPU_DOCS[key], labels=DCGM_LABELS)
                  for key, names in GPU_NAMES.items()}
        running: dict[str, list[tuple[int, str]]] = {}
        for device_id, job_id, owner in session.execute(
            # Through the allocations: a gang's job on each of its devices.
            select(Allocation.device_id, Job.id, User.name).join(Allocation, Allocation.job_id == Job.id)
            .join(User, Job.owner_id == User.id)
            .where(Job.status == JobStatus.running).order_by(Job.id)
        ):
            running.setdefault(str(device_id), []).append((job_id, owner))
        external = GaugeMetricFamily("gpulab_gpu_external_memory_mib",
                                     "GPU memory held by processes gpulab did not start (in MiB)",
                                     labels=DCGM_LABELS)
        cpu_util = GaugeMetricFamily("gpulab_cpu_utilization_percent", "CPU device load (in % of its cores)",
                                     labels=["device", "host"])
        cpu_mem = GaugeMetricFamily("gpulab_cpu_memory_used_mib", "CPU device memory used (in MiB)",
                                    labels=["device", "host"])
        for d in devices:
            up.add_metric([d.id, d.host, d.state], 1.0 if d.state == "online" else 0.0)
            s = samples.get(d.id)
            if s is None or s.t < fresh:
                continue
            if d.kind == DeviceKind.cuda:
                # Several jobs may share a GPU: one series per GPU, its jobs and members joined.
                jobs = running.get(d.id, [])
                labels = [str(d.index), d.uuid or "", d.id, d.name, d.host,
                          ",".join(str(j) for j, _ in jobs), ",".join(sorted({o for _, o in jobs}))]
                used, total = s.memory_used_mb, s.memory_total_mb or d.memory_total_mb
                values = {"util": s.utilization_pct, "used": used,
                          "free": None if used is None or total is None else total - used,
                          "temp": s.temperature_c, "power": s.power_w}
                for key, value in values.items():
                    if value is not None:
                        gauges[key].add_metric(labels, float(value))
                if s.external_mb is not None:
                    external.add_metric(labels, float(s.external_mb))
            else:
                if s.utilization_pct is not None:
                    cpu_util.add_metric([d.id, d.host], s.utilization_pct)
                if s.memory_used_mb is not None:
                    cpu_mem.add_metric([d.id, d.host], s.memory_used_mb)
        yield up
        yield from gauges.values()
        yield external
        yield cpu_util
        yield cpu_mem

    def _workers(self, session: Session) -> Iterator[Metric]:
        now = utcnow()
        age = GaugeMetricFamily("gpulab_worker_heartbeat_age_seconds", "Seconds since a live worker's heartbeat",
                                labels=["worker", "device", "host"])
        for w in session.scalars(select(Worker).where(Worker.stopped_at.is_(None))):
            age.add_metric([w.id, w.device_id, w.host], (now - w.last_heartbeat_at).total_seconds())
        yield age


def render_metrics(db: Database, settings: Settings) -> bytes:
    """One scrape: a fresh registry around a collector that reads the database now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GpulabCollector(db, settings))
    return generate_latest(registry)
