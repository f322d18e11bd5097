"""Folded jobs (service.accounting.rollups) answer /usage and /metrics exactly as the raw computation did."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from service.accounting import rollups
from service.accounting.report import GROUPS, usage_report
from service.accounting.rollups import FOLD_GRACE, fold_ended_jobs, fold_final_jobs
from service.db import Database
from service.metrics import render_metrics
from service.models import DeviceSample, Job, JobTally, User, utcnow
from service.scheduling.dispatcher import Dispatcher
from service.settings import Settings
from service.store.samples import downsample_and_prune
from tests.service.test_usage import CPU, GPU, NOW, add_job, add_second_gpu, ago, lab  # noqa: F401 (a fixture)

SECOND = "lab1/cuda:1"
# The second window cuts two runs and a cancelled job in the middle of their hours.
WINDOWS = (ago(hours=24), ago(hours=4, minutes=30), ago(hours=2, minutes=55))
JOB_FAMILIES = ("gpulab_jobs_submitted", "gpulab_jobs_started", "gpulab_jobs_finished", "gpulab_job_run_seconds",
                "gpulab_jobs", "gpulab_queue_depth", "gpulab_job_duration_seconds", "gpulab_dispatch_latency_seconds")


def readings(session, device_id: str, hours: float, every_s: int, offset: int) -> None:  # type: ignore[no-untyped-def]
    """Readings up to NOW whose values vary, so that every window has a mean of its own."""
    n = int(hours * 3600 / every_s)
    session.add_all(DeviceSample(device_id=device_id, t=NOW - timedelta(seconds=every_s * i), resolution="raw",
                                 utilization_pct=float((i * 37 + offset) % 101)) for i in range(n))
    session.commit()


@pytest.fixture
def history(db: Database, lab: dict[str, User]) -> dict[str, Job]:  # noqa: F811
    """Runs with partial hours at both ends, shared and CPU jobs, a gang, and jobs at every edge."""
    ada, bob = lab["ada"], lab["bob"]
    with db.writing() as s:
        add_second_gpu(s, SECOND)
        readings(s, GPU, 30, 60, 0)
        readings(s, SECOND, 30, 60, 11)
        readings(s, CPU, 30, 60, 53)
        jobs = {
            "partial": add_job(s, ada, device=GPU, status="succeeded", created=ago(hours=5, minutes=20),
                               started=ago(hours=5, minutes=17, seconds=13), finished=ago(hours=2, minutes=41)),
            "shared": add_job(s, bob, device=GPU, status="failed", created=ago(hours=3, minutes=8),
                              started=ago(hours=3, minutes=7, seconds=30), finished=ago(hours=1, minutes=3),
                              gpu_memory_gb=20),
            "cpu": add_job(s, ada, device=CPU, status="succeeded", created=ago(hours=1, minutes=51),
                           started=ago(hours=1, minutes=50), finished=ago(minutes=12), kind="autograd"),
            "straddles": add_job(s, bob, device=GPU, status="succeeded", created=ago(hours=26, minutes=1),
                                 started=ago(hours=26), finished=ago(hours=23, minutes=30)),
            "running": add_job(s, ada, device=GPU, status="running", created=ago(minutes=41), started=ago(minutes=40)),
            "pending": add_job(s, bob, device=None, status="pending", created=ago(minutes=5)),
            "never ran": add_job(s, ada, device=None, status="cancelled", created=ago(hours=3),
                                 finished=ago(hours=2, minutes=50)),
            "just ended": add_job(s, bob, device=GPU, status="succeeded", created=ago(minutes=9),
                                  started=ago(minutes=8), finished=ago(seconds=30)),
            "gang": add_job(s, ada, device=GPU, status="succeeded", created=ago(hours=4),
                            started=ago(hours=3, minutes=59), finished=ago(hours=2, minutes=1, seconds=7)),
            "long ago": add_job(s, bob, device=GPU, status="succeeded", created=ago(days=3),
                                started=ago(days=3), finished=ago(days=2, hours=23)),
        }
        jobs["gang"].gpus, jobs["gang"].device_ids = 2, [GPU, SECOND]
        s.commit()
    return jobs


def reports(db: Database) -> dict[tuple[Any, str], dict[str, dict[str, Any]]]:
    with db.reading() as s:
        # Numbers only, outcomes flattened: approx() compares flat mappings of numbers.
        return {(since, group): {r.key: {**{k: -1.0 if v is None else v for k, v in asdict(r).items()
                                            if k not in ("key", "outcomes")}, **r.outcomes}
                                 for r in usage_report(s, since=since, group_by=group, now=NOW)}
                for since in WINDOWS for group in GROUPS}


def job_series(db: Database, settings: Settings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = render_metrics(db, settings).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) if family.name in JOB_FAMILIES
            for sample in family.samples}


def test_folded_jobs_report_what_their_readings_say(db: Database, settings: Settings, history: dict[str, Job]) -> None:
    before, series_before = reports(db), job_series(db, settings)
    with db.writing() as s:
        assert fold_final_jobs(session=s, now=NOW) == 7  # not running, pending, nor ended within the grace
    with db.reading() as s:
        unfolded = set(s.scalars(select(Job.id).where(Job.utilization_readings.is_(None))))
        stored = s.get(Job, history["partial"].id)
        live_count, live_mean = s.execute(
            select(func.count(), func.avg(DeviceSample.utilization_pct)).where(
                DeviceSample.device_id == GPU, DeviceSample.t >= history["partial"].started_at,
                DeviceSample.t <= history["partial"].finished_at)).one()
    assert unfolded == {history[k].id for k in ("running", "pending", "just ended")}
    assert stored is not None and stored.utilization_readings == live_count > 100
    assert stored.utilization_sum / stored.utilization_readings == pytest.approx(live_mean)
    after = reports(db)
    assert after.keys() == before.keys()
    for key, rows in before.items():
        assert after[key].keys() == rows.keys(), key
        for group, row in rows.items():
            # Summed in SQL, SQLite's run times come from julianday(): exact to ~50 µs a job.
            assert after[key][group] == pytest.approx(row, rel=1e-6), (key, group)
    # Each window's rows hold hours and used hours: the comparison above compared something.
    assert before[(WINDOWS[1], "member")]["ada"]["gpu_used_hours"] > 0
    assert job_series(db, settings) == pytest.approx(series_before, rel=1e-12)


def test_folding_twice_adds_nothing(db: Database, settings: Settings, history: dict[str, Job]) -> None:
    with db.writing() as s:
        fold_final_jobs(session=s, now=NOW, limit=3)  # a batch at a time, oldest first
        fold_final_jobs(session=s, now=NOW)
        assert fold_final_jobs(session=s, now=NOW) == 0
    with db.reading() as s:
        tallies = {(t.kind, t.status, t.reason): (t.jobs, t.started, t.timed) for t in s.scalars(select(JobTally))}
    assert tallies == {("regression", "succeeded", ""): (4, 4, 4), ("regression", "failed", ""): (1, 1, 1),
                       ("autograd", "succeeded", ""): (1, 1, 1), ("regression", "cancelled", ""): (1, 0, 0)}
    # The dispatcher's housekeeping, at the real clock: a job ended in June is long due, one just now is not.
    with db.writing() as s:
        s.get(Job, history["just ended"].id).finished_at = utcnow()  # type: ignore[union-attr]
        s.commit()
    assert fold_ended_jobs(db) == 0
    with db.writing() as s:
        s.get(Job, history["just ended"].id).finished_at = NOW - FOLD_GRACE * 2  # type: ignore[union-attr]
        s.commit()
    assert fold_ended_jobs(db) == 1


def test_pruned_readings_leave_folded_usage_as_it_was(db: Database, history: dict[str, Job]) -> None:
    with db.writing() as s:
        fold_final_jobs(session=s, now=NOW)
    folded = reports(db)
    with db.writing() as s:
        # Raw readings older than an hour fold into minutes, and minutes older than two hours go.
        for device in (GPU, SECOND, CPU):
            downsample_and_prune(session=s, device_id=device, raw_keep_s=3600, minute_keep_s=7200, now=NOW)
    after = reports(db)
    by_kind = (WINDOWS[0], "kind")
    # The CPU job's readings are gone, its utilisation is not (the edges and gangs, read live, lost theirs).
    assert after[by_kind]["autograd"] == folded[by_kind]["autograd"]
    assert after[by_kind]["autograd"]["cpu_used_hours"] > 0
    with db.reading() as s:
        assert s.scalar(select(func.count()).select_from(DeviceSample).where(
            DeviceSample.device_id == CPU, DeviceSample.t < ago(hours=2))) == 0


def test_the_dispatchers_housekeeping_folds(db: Database, settings: Settings, history: dict[str, Job]) -> None:
    # At the real clock every final job of this June history is past the grace.
    Dispatcher(settings, db=db).run_once(force_reap=True)
    with db.reading() as s:
        folded = set(s.scalars(select(Job.id).where(Job.utilization_readings.is_not(None))))
    assert folded == {j.id for k, j in history.items() if k not in ("running", "pending")}


def test_a_scrape_reads_one_snapshot_while_a_fold_commits(db: Database, settings: Settings, history: dict[str, Job],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    before = job_series(db, settings)
    count_jobs = rollups.count_jobs

    def fold_in_between(session, where):  # type: ignore[no-untyped-def]
        # After the scrape has read the tallies, before it counts the unfolded jobs: in two
        # snapshots the folded jobs would be in neither, and the counters would dip.
        monkeypatch.setattr(rollups, "count_jobs", count_jobs)  # the fold counts its batch with it
        with db.writing() as other:
            assert fold_final_jobs(session=other, now=NOW) == 7
        return count_jobs(session, where)

    monkeypatch.setattr(rollups, "count_jobs", fold_in_between)
    assert job_series(db, settings) == pytest.approx(before, rel=1e-12)
    assert rollups.count_jobs is count_jobs  # the fold did run inside the scrape
    assert job_series(db, settings) == pytest.approx(before, rel=1e-12)
