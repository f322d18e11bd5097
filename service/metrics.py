"""/metrics in the Prometheus text format, read from the database at each scrape.

Device gauges carry the names and labels of NVIDIA's DCGM exporter (DCGM_FI_DEV_GPU_UTIL with
gpu, UUID, device, modelName, Hostname), so existing GPU dashboards work unchanged, plus the
jobs and members running on each GPU (`hpc_job`, `member`, as DCGM exporter's HPC job mapping
labels them); with GPULAB_METRICS_DCGM_NAMES=false they are `gpulab_gpu_*` instead, for a lab
that runs the DCGM exporter too. The CPU device and gpulab's own numbers are `gpulab_*`.
The counters and histograms are computed in SQL over every job the database keeps (gpulab
deletes no job), so they only grow, as Prometheus counters must, and rate() works on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from service.db import Database
from service.models import Allocation, Device, DeviceKind, Job, JobStatus, User, Worker, utcnow
from service.settings import Settings
from service.store.samples import latest_samples
from service.usage import idle_jobs

DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600, 3600)
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


def _seconds_between(session: Session, start: Any, end: Any) -> Any:
    """end − start in seconds, as SQL for this database."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


def _bucket_counts(value: Any, buckets: tuple[float, ...]) -> list[Any]:
    return [func.coalesce(func.sum(case((value <= b, 1), else_=0)), 0) for b in buckets]


def _job_totals(session: Session) -> list[Any]:
    """Per (kind, status, reason): jobs, started, run time, and the two histograms' buckets.

    One pass over the jobs table for every job counter: it is read whole by nature (counters
    are totals over every job kept), and at 100,000 jobs each extra pass costs a scrape tens of
    milliseconds.
    """
    jobs = (select(Job.id, Job.kind, Job.status, Job.reason, Job.started_at, Job.run_seconds,
                   _seconds_between(session, Job.created_at, Job.started_at).label("latency")).cte("j"))
    if session.get_bind().dialect.name == "sqlite":
        # Each job's latency computed once: inlined, SQLite calls julianday() twice for each of
        # the twelve sums that read it (2.5× slower at 20,000 jobs).
        jobs = jobs.prefix_with("MATERIALIZED")
    return list(session.execute(
        select(jobs.c.kind, jobs.c.status, jobs.c.reason, func.count(jobs.c.id).label("jobs"),
               func.count(jobs.c.started_at).label("started"), func.coalesce(func.sum(jobs.c.run_seconds), 0.0),
               func.count(jobs.c.run_seconds), *_bucket_counts(jobs.c.run_seconds, DURATION_BUCKETS),
               func.coalesce(func.sum(jobs.c.latency), 0.0), *_bucket_counts(jobs.c.latency, LATENCY_BUCKETS))
        .group_by(jobs.c.kind, jobs.c.status, jobs.c.reason).order_by(jobs.c.kind, jobs.c.status, jobs.c.reason)
    ))


def _histogram(name: str, doc: str, buckets: tuple[float, ...], count: int, total: float,
               cumulative: list[int]) -> HistogramMetricFamily:
    points = [(str(float(b)), int(c)) for b, c in zip(buckets, cumulative, strict=True)]
    points.append(("+Inf", int(count)))
    return HistogramMetricFamily(name, doc, buckets=points, sum_value=float(total))


def _sum_columns(rows: list[Any], start: int, width: int) -> list[float]:
    return [sum(float(r[start + i] or 0) for r in rows) for i in range(width)]


class GpulabCollector(Collector):
    def __init__(self, db: Database, settings: Settings):
        self.db = db
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        with self.db.reading() as session:
            yield from self._jobs(session)
            yield from self._devices(session)
            yield from self._workers(session)

    def _jobs(self, session: Session) -> Iterator[Metric]:
        totals = _job_totals(session)
        submitted = CounterMetricFamily("gpulab_jobs_submitted", "Jobs submitted", labels=["kind"])
        started = CounterMetricFamily("gpulab_jobs_started", "Jobs that started running", labels=["kind"])
        run_seconds = CounterMetricFamily("gpulab_job_run_seconds", "Run time of finished jobs (in s)",
                                          labels=["kind"])
        for kind in sorted({r.kind for r in totals}):
            rows = [r for r in totals if r.kind == kind]
            submitted.add_metric([kind], sum(r.jobs for r in rows))
            started.add_metric([kind], sum(r.started for r in rows))
            run_seconds.add_metric([kind], sum(float(r[5] or 0.0) for r in rows))
        finished = CounterMetricFamily("gpulab_jobs_finished", "Jobs that ended, by kind, status and reason",
                                       labels=["kind", "status", "reason"])
        for r in totals:
            if JobStatus(r.status).is_final:
                finished.add_metric([r.kind, r.status, r.reason or ""], r.jobs)
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
        d, n = 7, len(DURATION_BUCKETS)  # the duration histogram's columns: count, then buckets
        yield _histogram("gpulab_job_duration_seconds", "Run time of finished jobs", DURATION_BUCKETS,
                         int(sum(r[6] for r in totals)), sum(float(r[5] or 0.0) for r in totals),
                         [int(c) for c in _sum_columns(totals, d, n)])
        yield _histogram("gpulab_dispatch_latency_seconds", "Submit to start, of every started job", LATENCY_BUCKETS,
                         sum(r.started for r in totals), _sum_columns(totals, d + n, 1)[0],
                         [int(c) for c in _sum_columns(totals, d + n + 1, len(LATENCY_BUCKETS))])
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
