"""/metrics: Prometheus text that a scraper parses, with DCGM's names and labels for GPUs."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from service.api.app import create_app
from service.db import Database
from service.models import Device, Job, User, utcnow
from service.scheduling.device_request import request_fields
from service.settings import Settings
from service.store.allocations import allocate
from service.store.samples import record_sample
from service.store.users import create_user


def families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list, name: str, **labels: str) -> float:
    matches = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, samples)
    return matches[0]


def seed(db: Database) -> str:
    now = utcnow()
    with db.writing() as session:
        ada, token = create_user(session=session, name="ada")
        session.add_all([
            Device(id="lab1/cuda:1", host="lab1", kind="cuda", index=1, name="NVIDIA H200", uuid="GPU-1234",
                   memory_total_mb=143771, slots=1, state="online"),
            Device(id="lab1/cpu", host="lab1", kind="cpu", name="CPU", slots=1, state="offline"),
        ])
        session.commit()
        record_sample(session=session, device_id="lab1/cuda:1", t=now - timedelta(seconds=3), sample={
            "utilization_pct": 87.0, "memory_used_mb": 40000.0, "memory_total_mb": 143771.0, "temperature_c": 61.0,
            "power_w": 455.5, "external_mb": 1024.0})
        record_sample(session=session, device_id="lab1/cpu", t=now - timedelta(seconds=3),
                      sample={"utilization_pct": 12.5, "memory_used_mb": 8000.0})

        def job(status: str, created_s: float, started_s: float | None, run_s: float | None) -> Job:
            return Job(owner_id=ada.id, kind="regression", params={}, **request_fields("gpu"), timeout_s=60,
                       status=status, created_at=now - timedelta(seconds=created_s), device_id="lab1/cuda:1",
                       started_at=None if started_s is None else now - timedelta(seconds=started_s),
                       run_seconds=run_s)

        running = job("running", 10, 9.97, None)
        session.add_all([job("succeeded", 100, 99.8, 3.0), job("failed", 50, 20, 400.0), running,
                         job("pending", 5, None, None), job("pending", 4, None, None)])
        session.flush()
        allocate(session, job_id=running.id, attempt=running.attempt, device_ids=["lab1/cuda:1"])
        session.commit()
    return token


def test_metrics_parse_with_dcgm_names(settings: Settings, db: Database) -> None:
    seed(db)
    with TestClient(create_app(settings)) as client:
        r = client.get("/metrics")  # public by default: Prometheus scrapes without a token
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    f = families(r.text)
    assert value(f["gpulab_jobs"], "gpulab_jobs", status="pending") == 2
    assert value(f["gpulab_jobs"], "gpulab_jobs", status="cancelled") == 0
    assert value(f["gpulab_queue_depth"], "gpulab_queue_depth") == 2
    assert value(f["gpulab_running_jobs"], "gpulab_running_jobs", member="ada") == 1

    duration = f["gpulab_job_duration_seconds"]
    assert value(duration, "gpulab_job_duration_seconds_count") == 2
    assert value(duration, "gpulab_job_duration_seconds_sum") == 403.0
    assert value(duration, "gpulab_job_duration_seconds_bucket", le="5.0") == 1
    assert value(duration, "gpulab_job_duration_seconds_bucket", le="+Inf") == 2
    latency = f["gpulab_dispatch_latency_seconds"]
    assert value(latency, "gpulab_dispatch_latency_seconds_count") == 3
    assert value(latency, "gpulab_dispatch_latency_seconds_bucket", le="0.05") == 1
    assert value(latency, "gpulab_dispatch_latency_seconds_bucket", le="0.25") == 2
    assert abs(value(latency, "gpulab_dispatch_latency_seconds_sum") - 30.23) < 0.01

    gpu = {"gpu": "1", "UUID": "GPU-1234", "device": "lab1/cuda:1", "modelName": "NVIDIA H200", "Hostname": "lab1"}
    assert value(f["DCGM_FI_DEV_GPU_UTIL"], "DCGM_FI_DEV_GPU_UTIL", **gpu) == 87.0
    assert value(f["DCGM_FI_DEV_FB_USED"], "DCGM_FI_DEV_FB_USED", **gpu) == 40000.0
    assert value(f["DCGM_FI_DEV_FB_FREE"], "DCGM_FI_DEV_FB_FREE", **gpu) == 103771.0
    assert value(f["DCGM_FI_DEV_GPU_TEMP"], "DCGM_FI_DEV_GPU_TEMP", **gpu) == 61.0
    assert value(f["DCGM_FI_DEV_POWER_USAGE"], "DCGM_FI_DEV_POWER_USAGE", **gpu) == 455.5
    assert value(f["gpulab_gpu_external_memory_mib"], "gpulab_gpu_external_memory_mib", **gpu) == 1024.0
    # The CPU is no GPU: it gets gpulab's own names, never DCGM's.
    assert value(f["gpulab_cpu_utilization_percent"], "gpulab_cpu_utilization_percent", device="lab1/cpu") == 12.5
    assert all(s.labels["device"] != "lab1/cpu" for s in f["DCGM_FI_DEV_GPU_UTIL"])
    assert value(f["gpulab_device_up"], "gpulab_device_up", device="lab1/cpu") == 0
    assert value(f["gpulab_device_up"], "gpulab_device_up", device="lab1/cuda:1") == 1


def test_stale_readings_are_left_out(settings: Settings, db: Database) -> None:
    seed(db)
    with db.writing() as session:
        record_sample(session=session, device_id="lab1/cuda:1", t=utcnow() + timedelta(seconds=1),
                      sample={"utilization_pct": 5.0})
    with TestClient(create_app(settings)) as client:
        f = families(client.get("/metrics").text)
    # The newest reading wins; a reading without memory leaves the memory gauges out.
    assert value(f["DCGM_FI_DEV_GPU_UTIL"], "DCGM_FI_DEV_GPU_UTIL", device="lab1/cuda:1") == 5.0
    assert f["DCGM_FI_DEV_FB_USED"] == []


def test_metrics_can_require_a_token(settings: Settings, db: Database) -> None:
    token = seed(db)
    private = settings.model_copy(update={"metrics_public": False})
    with TestClient(create_app(private)) as client:
        r = client.get("/metrics")
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "gpulab_queue_depth 2.0" in r.text


def test_job_counters_by_kind_status_and_reason(settings: Settings, db: Database) -> None:
    seed(db)
    with db.writing() as session:
        owner = session.scalars(select(User)).one()
        session.add(Job(owner_id=owner.id, kind="gan", params={}, **request_fields("cpu"), timeout_s=60,
                        status="failed", reason="oom", started_at=utcnow(), run_seconds=2.5))
        session.commit()
    with TestClient(create_app(settings)) as client:
        f = families(client.get("/metrics").text)
    # Counters (the `_total` samples) so that rate() and increase() work on them.
    finished = f["gpulab_jobs_finished"]
    assert value(finished, "gpulab_jobs_finished_total", kind="regression", status="succeeded", reason="") == 1
    assert value(finished, "gpulab_jobs_finished_total", kind="regression", status="failed", reason="") == 1
    assert value(finished, "gpulab_jobs_finished_total", kind="gan", status="failed", reason="oom") == 1
    assert {s.labels["status"] for s in finished} == {"succeeded", "failed"}  # only ended jobs
    assert value(f["gpulab_jobs_submitted"], "gpulab_jobs_submitted_total", kind="regression") == 5
    assert value(f["gpulab_jobs_started"], "gpulab_jobs_started_total", kind="regression") == 3
    assert value(f["gpulab_job_run_seconds"], "gpulab_job_run_seconds_total", kind="gan") == 2.5
    assert value(f["gpulab_job_run_seconds"], "gpulab_job_run_seconds_total", kind="regression") == 403.0


def test_gpu_gauges_name_the_job_and_member_on_the_gpu(settings: Settings, db: Database) -> None:
    seed(db)
    with db.reading() as session:
        running = session.scalars(select(Job.id).where(Job.status == "running")).one()
    with TestClient(create_app(settings)) as client:
        f = families(client.get("/metrics").text)
    util = f["DCGM_FI_DEV_GPU_UTIL"]
    assert value(util, "DCGM_FI_DEV_GPU_UTIL", device="lab1/cuda:1", hpc_job=str(running), member="ada") == 87.0
    # With the DCGM exporter beside gpulab, ours take gpulab's own names: no two sources of one series.
    own = settings.model_copy(update={"metrics_dcgm_names": False})
    with TestClient(create_app(own)) as client:
        f = families(client.get("/metrics").text)
    assert not any(name.startswith("DCGM_") for name in f)
    assert value(f["gpulab_gpu_utilization_percent"], "gpulab_gpu_utilization_percent", UUID="GPU-1234",
                 hpc_job=str(running), member="ada") == 87.0
    assert value(f["gpulab_gpu_memory_used_mib"], "gpulab_gpu_memory_used_mib", UUID="GPU-1234") == 40000.0
