"""Usage accounting, device samples' retention, and the /usage, /devices and /workers views."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.accounting.report import usage_report
from service.accounting.timeline import queue_timeline
from service.accounting.usage import idle_jobs, job_usage, parse_since
from service.api.app import create_app
from service.db import Database
from service.errors import InvalidRequest
from service.models import Device, DeviceSample, Job, User, Worker, utcnow
from service.scheduling.device_request import request_fields
from service.settings import Settings
from service.store.samples import downsample_and_prune, latest_samples, record_sample
from service.store.users import create_user

NOW = datetime.fromisoformat("2026-06-01T12:00:00+00:00")
GPU, CPU = "lab1/cuda:0", "lab1/cpu"


def ago(**kw: float) -> datetime:
    return NOW - timedelta(**kw)


def seed_devices(session) -> None:  # type: ignore[no-untyped-def]
    session.add_all([
        Device(id=GPU, host="lab1", kind="cuda", index=0, name="NVIDIA H100", uuid="GPU-abc", memory_total_mb=81920,
               slots=2, state="online"),
        Device(id=CPU, host="lab1", kind="cpu", name="CPU", memory_total_mb=64000, slots=1, state="online"),
    ])
    session.commit()


def add_job(session, owner: User, *, device: str | None, status: str, created: datetime,  # type: ignore[no-untyped-def]
            started: datetime | None = None, finished: datetime | None = None, kind: str = "regression",
            gpu_memory_gb: float | None = None, peak: float | None = None) -> Job:
    job = Job(owner_id=owner.id, kind=kind, params={}, **request_fields(device or "gpu"), timeout_s=3600,
              status=status, device_id=device, created_at=created, started_at=started, finished_at=finished,
              gpu_memory_gb=gpu_memory_gb, peak_memory_mb=peak,
              run_seconds=(finished - started).total_seconds() if started and finished else None)
    session.add(job)
    session.commit()
    return job


def add_samples(session, device_id: str, start: datetime, end: datetime, util: float,  # type: ignore[no-untyped-def]
                every_s: float = 10, **extra: float) -> None:
    t = start
    while t <= end:
        record_sample(session=session, device_id=device_id, t=t, sample={"utilization_pct": util, **extra})
        t += timedelta(seconds=every_s)


@pytest.fixture
def lab(db: Database) -> dict[str, User]:
    with db.writing() as session:
        seed_devices(session)
        ada, _ = create_user(session=session, name="ada")
        bob, _ = create_user(session=session, name="bob")
    return {"ada": ada, "bob": bob}


def test_job_usage_is_share_times_run_time_and_used_follows_utilisation(db: Database, lab: dict[str, User]) -> None:
    with db.writing() as session:
        # Alone on the GPU for an hour at 40 %; then sharing it (20 of 80 GiB) for an hour at 80 %.
        add_samples(session, GPU, ago(hours=3), ago(hours=2), 40.0, every_s=60)
        add_samples(session, GPU, ago(hours=2) + timedelta(seconds=30), ago(hours=1), 80.0, every_s=60)
        alone = add_job(session, lab["ada"], device=GPU, status="succeeded", created=ago(hours=3, minutes=5),
                        started=ago(hours=3), finished=ago(hours=2), peak=1234.0)
        shared = add_job(session, lab["bob"], device=GPU, status="failed", created=ago(hours=2, seconds=20),
                         started=ago(hours=2) + timedelta(seconds=30), finished=ago(hours=1), gpu_memory_gb=20)
    with db.reading() as session:
        a = job_usage(session, job_id=alone.id, idle_minutes=30, idle_pct=5, now=NOW)
        b = job_usage(session, job_id=shared.id, idle_minutes=30, idle_pct=5, now=NOW)
        assert job_usage(session, job_id=9999, idle_minutes=30, idle_pct=5, now=NOW) is None
    assert a is not None and b is not None
    assert (a.share, a.allocated_seconds, a.mean_utilization_pct) == (1.0, 3600.0, 40.0)
    assert a.used_seconds == pytest.approx(1440.0)
    assert (a.wait_seconds, a.peak_memory_mb, a.idle) == (300.0, 1234.0, False)
    assert b.share == pytest.approx(0.25)
    assert b.allocated_seconds == pytest.approx(0.25 * 3570)
    assert b.used_seconds == pytest.approx(0.25 * 3570 * 0.8)
    assert b.wait_seconds == pytest.approx(50.0)


def test_usage_report_groups_hours_outcomes_and_waits(db: Database, lab: dict[str, User]) -> None:
    with db.writing() as session:
        add_samples(session, GPU, ago(hours=4), NOW, 50.0, every_s=120)
        add_job(session, lab["ada"], device=GPU, status="succeeded", created=ago(hours=2, seconds=10),
                started=ago(hours=2), finished=ago(hours=1))
        add_job(session, lab["ada"], device=CPU, status="failed", created=ago(minutes=40, seconds=30),
                started=ago(minutes=40), finished=ago(minutes=10), kind="autograd")
        add_job(session, lab["bob"], device=GPU, status="running", created=ago(minutes=30, seconds=20),
                started=ago(minutes=30), gpu_memory_gb=40)
        add_job(session, lab["bob"], device=None, status="pending", created=ago(minutes=5))
        # Ended before the window: not counted; started before it: clipped to it.
        add_job(session, lab["bob"], device=GPU, status="succeeded", created=ago(days=9),
                started=ago(days=9), finished=ago(days=8))
        add_job(session, lab["ada"], device=GPU, status="succeeded", created=ago(hours=30),
                started=ago(hours=26), finished=ago(hours=23))
    with db.reading() as session:
        by_member = {r.key: r for r in usage_report(session, since=ago(hours=24), group_by="member", now=NOW)}
        by_device = {r.key: r for r in usage_report(session, since=ago(hours=24), group_by="device", now=NOW)}
        by_kind = {r.key: r for r in usage_report(session, since=ago(hours=24), group_by="kind", now=NOW)}
        with pytest.raises(InvalidRequest):
            usage_report(session, since=ago(hours=24), group_by="colour", now=NOW)
    ada, bob = by_member["ada"], by_member["bob"]
    assert ada.jobs == 3 and ada.outcomes == {"succeeded": 2, "failed": 1}
    assert ada.gpu_hours == pytest.approx(1.0 + 1.0)  # one hour, and the last hour of a clipped run
    assert ada.gpu_used_hours == pytest.approx(0.5)  # 50 % of the first hour; no readings for the other
    assert ada.cpu_hours == pytest.approx(0.5)
    assert ada.mean_wait_s == pytest.approx((10 + 30) / 2)  # the clipped job started before the window
    assert bob.jobs == 2 and bob.outcomes == {"running": 1, "pending": 1}
    assert bob.gpu_hours == pytest.approx(0.5 * 0.5)  # half the card for half an hour
    assert bob.mean_wait_s == pytest.approx(20.0)
    assert set(by_device) == {GPU, CPU, "(not placed)"}
    assert by_device[GPU].jobs == 3
    assert by_kind["autograd"].cpu_hours == pytest.approx(0.5)
    # The busiest GPU user comes first.
    assert list(by_member) == ["ada", "bob"]


def add_second_gpu(session: Session, device_id: str) -> None:
    session.add(Device(id=device_id, host="lab1", kind="cuda", index=1, name="H100", memory_total_mb=81920,
                       slots=1, state="online"))
    session.commit()


def test_idle_gpu_jobs_are_flagged_after_the_window(db: Database, lab: dict[str, User]) -> None:
    idle_gpu = "lab1/cuda:1"
    with db.writing() as session:
        add_second_gpu(session, idle_gpu)
        add_samples(session, GPU, ago(minutes=50), NOW, 60.0, every_s=30)
        add_samples(session, idle_gpu, ago(minutes=50), NOW, 0.0, every_s=30)
        busy = add_job(session, lab["ada"], device=GPU, status="running", created=ago(minutes=45),
                       started=ago(minutes=45))
        idle = add_job(session, lab["bob"], device=idle_gpu, status="running", created=ago(minutes=45),
                       started=ago(minutes=45))
    with db.reading() as session:
        flagged = idle_jobs(session, idle_minutes=30, idle_pct=5, now=NOW)
        # A window longer than the job has run flags nothing yet.
        assert idle_jobs(session, idle_minutes=60, idle_pct=5, now=NOW) == []
        assert job_usage(session, job_id=idle.id, idle_minutes=30, idle_pct=5, now=NOW).idle  # type: ignore[union-attr]
    assert [u.job_id for u in flagged] == [idle.id]
    assert flagged[0].owner == "bob" and flagged[0].mean_utilization_pct == 0.0
    assert busy.id not in {u.job_id for u in flagged}


def test_a_gang_reads_utilisation_on_all_its_devices(db: Database, lab: dict[str, User]) -> None:
    second = "lab1/cuda:1"
    with db.writing() as session:
        add_second_gpu(session, second)
        # An hour on two GPUs: the leader at 80 %, the other at 20 %.
        add_samples(session, GPU, ago(hours=2), ago(hours=1), 80.0, every_s=60)
        add_samples(session, second, ago(hours=2), ago(hours=1), 20.0, every_s=60)
        gang = add_job(session, lab["ada"], device=GPU, status="succeeded", created=ago(hours=2),
                       started=ago(hours=2), finished=ago(hours=1))
        gang.gpus, gang.device_ids = 2, [GPU, second]
        session.commit()
        # Running for 45 minutes: idle only while both of its devices are.
        add_samples(session, GPU, ago(minutes=50), NOW, 0.0, every_s=30)
        add_samples(session, second, ago(minutes=50), NOW, 60.0, every_s=30)
        running = add_job(session, lab["bob"], device=GPU, status="running", created=ago(minutes=45),
                          started=ago(minutes=45))
        running.gpus, running.device_ids = 2, [GPU, second]
        session.commit()
    with db.reading() as session:
        u = job_usage(session, job_id=gang.id, idle_minutes=30, idle_pct=5, now=NOW)
        by_device = {r.key: r for r in usage_report(session, since=ago(hours=3), group_by="device", now=NOW)}
        by_member = {r.key: r for r in usage_report(session, since=ago(hours=3), group_by="member", now=NOW)}
        idle = idle_jobs(session, idle_minutes=30, idle_pct=5, now=NOW)
    assert u is not None and u.device_ids == [GPU, second]
    assert (u.allocated_seconds, u.mean_utilization_pct) == (7200.0, 50.0)  # 2 × an hour, at (80 + 20) / 2 %
    assert u.used_seconds == pytest.approx(3600.0)
    assert by_member["ada"].gpu_hours == pytest.approx(2.0) and by_member["ada"].gpu_used_hours == pytest.approx(1.0)
    # Per device, each holds half of the gang: an hour each, used at its own utilisation.
    assert by_device[second].gpu_hours == pytest.approx(1.0 + 0.75)
    assert by_device[second].gpu_used_hours == pytest.approx(0.2 + 0.75 * 0.6, rel=0.02)
    assert running.id not in {j.job_id for j in idle}  # its second device works


def test_queue_timeline_counts_waiting_and_running_jobs(db: Database, lab: dict[str, User]) -> None:
    with db.writing() as session:
        add_job(session, lab["ada"], device=GPU, status="succeeded", created=ago(minutes=50),
                started=ago(minutes=35), finished=ago(minutes=25))
        add_job(session, lab["bob"], device=None, status="pending", created=ago(minutes=20))
        add_job(session, lab["bob"], device=None, status="cancelled", created=ago(minutes=55),
                finished=ago(minutes=45))
    with db.reading() as session:
        points = queue_timeline(session, since=ago(hours=1), step_s=600, now=NOW)
    assert [p.t for p in points] == [ago(minutes=m) for m in (50, 40, 30, 20, 10, 0)]
    assert [p.queue_depth for p in points] == [2, 1, 0, 1, 1, 1]
    assert [p.running for p in points] == [0, 0, 1, 0, 0, 0]
    assert [p.started for p in points] == [0, 0, 1, 0, 0, 0]
    assert points[2].mean_wait_s == pytest.approx(900.0)


def test_queue_timeline_shows_the_peak_and_mean_within_each_step(db: Database, lab: dict[str, User]) -> None:
    # Four jobs queue for 85 s and run for 60 s inside one 24-minute step of a 24 h view: at the
    # step's end nothing waits or runs, yet the step shows them.
    with db.writing() as session:
        for i in range(4):
            add_job(session, lab["ada"], device=GPU, status="succeeded", created=ago(minutes=30),
                    started=ago(minutes=30, seconds=-85), finished=ago(minutes=30, seconds=-145 - 60 * i))
    with db.reading() as session:
        points = queue_timeline(session, since=ago(hours=24), step_s=24 * 60, now=NOW)
    step = next(p for p in points if p.t == ago(minutes=24))
    assert (step.queue_depth, step.running) == (0, 0)
    assert step.queue_depth_max == 4 and step.queue_depth_mean == pytest.approx(4 * 85 / 1440, abs=1e-3)
    assert step.running_max == 4
    assert step.running_mean == pytest.approx(sum(60 + 60 * i for i in range(4)) / 1440, abs=1e-3)
    assert sum(p.queue_depth_max for p in points) == 4  # every other step stayed empty
    assert [p.started for p in points if p.started] == [4]


def test_samples_fold_into_minutes_then_expire(db: Database, lab: dict[str, User]) -> None:
    with db.writing() as session:
        # Two days ago: six raw readings in one minute (they fold into one minute of their mean).
        for i, util in enumerate((10, 20, 30, 40, 50, 60)):
            record_sample(session=session, device_id=GPU, t=ago(days=2) + timedelta(seconds=10 * i),
                          sample={"utilization_pct": util, "memory_used_mb": 1000.0 + i, "external_mb": 500.0})
        # Forty days ago, already a minute average: past the month, dropped.
        session.add(DeviceSample(device_id=GPU, t=ago(days=40), resolution="minute", utilization_pct=1.0))
        session.commit()
        add_samples(session, GPU, ago(minutes=2), ago(minutes=1), 90.0, external_mb=700.0)
        folded, dropped = downsample_and_prune(session=session, device_id=GPU, raw_keep_s=86400,
                                               minute_keep_s=30 * 86400, now=NOW)
        assert (folded, dropped) == (6, 1)
    with db.reading() as session:
        minutes = session.scalars(select(DeviceSample).where(DeviceSample.resolution == "minute")).all()
        assert len(minutes) == 1
        assert minutes[0].utilization_pct == pytest.approx(35.0)
        assert minutes[0].memory_used_mb == pytest.approx(1002.5)
        raw = session.scalar(select(func.count()).select_from(DeviceSample).where(DeviceSample.resolution == "raw"))
        assert raw == 7
        latest = latest_samples(session=session)
        assert set(latest) == {GPU}
        assert latest[GPU].t == ago(minutes=1) and latest[GPU].external_mb == 700.0
    with db.writing() as session:
        # A second pass finds nothing left to fold.
        assert downsample_and_prune(session=session, device_id=GPU, raw_keep_s=86400,
                                    minute_keep_s=30 * 86400, now=NOW) == (0, 0)


def test_parse_since() -> None:
    assert parse_since("7d", now=NOW) == ago(days=7)
    assert parse_since("90m", now=NOW) == ago(minutes=90)
    assert parse_since("2026-05-01T00:00:00", now=NOW) == datetime.fromisoformat("2026-05-01T00:00:00+00:00")
    with pytest.raises(InvalidRequest) as e:
        parse_since("last tuesday", now=NOW)
    assert e.value.field == "since"


def test_usage_devices_and_workers_over_http(settings: Settings, db: Database, lab: dict[str, User]) -> None:
    now = utcnow()
    with db.writing() as session:
        _, token = create_user(session=session, name="root", is_admin=True)
        add_samples(session, GPU, now - timedelta(minutes=3), now, 30.0, every_s=15, memory_used_mb=2048.0,
                    memory_total_mb=81920.0, temperature_c=55.0, power_w=210.0, external_mb=512.0)
        job = add_job(session, lab["ada"], device=GPU, status="running", created=now - timedelta(minutes=3),
                      started=now - timedelta(minutes=2))
        session.add(Worker(id="lab1-w1", device_id=GPU, host="lab1", pid=4242, slots=2,
                           last_heartbeat_at=now - timedelta(seconds=2), running_job_ids=[job.id]))
        session.commit()
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        devices = {d["id"]: d for d in client.get("/devices").json()}
        gpu = devices[GPU]
        assert (gpu["utilization_pct"], gpu["memory_used_mb"], gpu["temperature_c"], gpu["power_w"],
                gpu["external_mb"]) == (30.0, 2048.0, 55.0, 210.0, 512.0)
        assert devices[CPU]["utilization_pct"] is None
        assert client.get(f"/devices/{GPU}/info").json()["power_w"] == 210.0
        points = client.get(f"/devices/{GPU}/samples", params={"since": "10m", "step": "1m"}).json()
        assert 3 <= len(points) <= 5 and all(p["utilization_pct"] == 30.0 for p in points)
        r = client.get(f"/devices/{GPU}/samples", params={"step": "soon"})
        assert r.status_code == 422 and r.json()["field"] == "step"
        assert client.get("/devices/lab1/cuda:7/samples").status_code == 404

        report = client.get("/usage", params={"since": "1h", "group_by": "member"}).json()
        assert report["group_by"] == "member"
        (ada,) = [r for r in report["rows"] if r["key"] == "ada"]
        assert ada["outcomes"] == {"running": 1} and ada["gpu_hours"] == pytest.approx(1 / 30, rel=0.05)
        assert client.get("/usage", params={"group_by": "colour"}).status_code == 422
        r = client.get("/usage", params={"since": "yesterday-ish"})
        assert r.status_code == 422 and r.json()["code"] == "invalid_request"
        one = client.get(f"/usage/jobs/{job.id}").json()
        assert one["mean_utilization_pct"] == 30.0 and one["device_id"] == GPU
        assert client.get("/usage/jobs/99999").json()["code"] == "job_not_found"
        timeline = client.get("/usage/timeline", params={"since": "1h", "step": "10m"}).json()
        assert len(timeline["points"]) == 6 and timeline["points"][-1]["running"] == 1

        (worker,) = client.get("/workers").json()
        assert worker["device_id"] == GPU and worker["running_job_ids"] == [job.id]
        assert 1 < worker["heartbeat_age_s"] < 60
        assert client.get("/usage", headers={"Authorization": ""}).status_code == 401
