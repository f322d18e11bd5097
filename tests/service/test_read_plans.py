"""The lab's hot reads use indexes on both databases: no whole scan of jobs, events, metrics or samples.

Each read runs for real while its statements are captured; each statement is then EXPLAINed.
PostgreSQL plans with sequential and bitmap scans priced out: on these small tables it would
scan (or read a bitmap and sort) anyway, so a Seq Scan or a Sort left in the plan means no
index can serve the query in its order. How fast the reads are at 100,000 jobs is
bench/reads.py's business, not a test's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.orm import Session

from service.accounting.report import usage_report
from service.accounting.rollups import fold_final_jobs, job_totals
from service.accounting.usage import job_usage
from service.db import Database
from service.models import Allocation, Device, DeviceSample, Job, JobMetricSummary, utcnow
from service.scheduling.device_request import request_fields
from service.scheduling.queue_page import queue_page
from service.settings import Settings
from service.store.job_records import list_jobs
from service.store.metric_summaries import CHART_POINTS, chart_series, jobs_to_summarise
from service.store.samples import latest_samples
from service.store.users import create_user

LARGE = "jobs|job_events|job_metrics|device_samples"
# A walk of the partial index of unfolded jobs (service.accounting.rollups) reads those few, not the table.
WHOLE_SCAN = re.compile(rf"Seq Scan on ({LARGE})\b|\bSCAN ({LARGE})\b"
                        r"(?! USING (COVERING INDEX|INDEX ix_jobs_unfolded))")
# A page sorted after the read: every matching job was read to find the newest few.
SORT = re.compile(r"\bSort\b|TEMP B-TREE FOR ORDER BY")
GPU = "lab0/cuda:0"


@pytest.fixture
def lab(db: Database) -> dict[str, int]:
    """Two members, a GPU with a day of samples, and jobs in every state."""
    now = utcnow()
    with db.writing() as s:
        ann, _ = create_user(session=s, name="ann")
        bob, _ = create_user(session=s, name="bob")
        s.add(Device(id=GPU, host="lab0", kind="cuda", index=0, name="H100", memory_total_mb=81920, slots=1,
                     state="online"))
        s.flush()
        for i, status in enumerate(["succeeded", "failed", "cancelled", "running", "pending", "pending"] * 5):
            started = now - timedelta(hours=i + 1) if status != "pending" else None
            job = Job(owner_id=(ann.id, bob.id)[i % 2], kind=("regression", "autograd")[i % 3 == 0], params={},
                      **request_fields("gpu"), timeout_s=3600, status=status, created_at=now - timedelta(hours=i + 2),
                      started_at=started, device_id=GPU if started else None, attempt=1,
                      finished_at=started + timedelta(minutes=30) if started and status != "running" else None)
            s.add(job)
            s.flush()
            if status == "running":
                s.add(Allocation(job_id=job.id, device_id=GPU, attempt=1, leader=True))
        s.add_all(DeviceSample(device_id=GPU, t=now - timedelta(minutes=m), resolution="raw", utilization_pct=50.0)
                  for m in range(0, 24 * 60, 10))
        s.commit()
        return {"ann": ann.id, "bob": bob.id}


@contextmanager
def statements(session: Session) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs a session sends inside the block."""
    seen: list[tuple[str, Any]] = []

    def log(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", log)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", log)


def whole_scans(db: Database, read: Callable[[Session], object], pattern: re.Pattern[str] = WHOLE_SCAN) -> list[str]:
    """Run `read`, EXPLAIN what it sent, and return the plan lines that match `pattern` (a whole scan)."""
    bad = []
    with db.reading() as s:
        with statements(s) as seen:
            read(s)
        sqlite = s.get_bind().dialect.name == "sqlite"
        if not sqlite:  # at this size a scan, or a bitmap read then sorted, is cheapest: price both out
            s.execute(text("SET LOCAL enable_seqscan = off"))
            s.execute(text("SET LOCAL enable_bitmapscan = off"))
        cursor = s.connection().connection.cursor()
        for statement, parameters in seen:
            cursor.execute(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement, parameters)
            plan = [str(r[-1] if sqlite else r[0]) for r in cursor.fetchall()]
            bad += [f"{line.strip()}  ←  {' '.join(statement.split())[:120]}" for line in plan
                    if pattern.search(line)]
    return bad


@pytest.mark.parametrize("filters", [
    {"owner": "ann"}, {"statuses": ["running"]}, {"statuses": ["succeeded", "failed"]}, {"kind": "autograd"},
    {"owner": "bob", "statuses": ["pending"], "before_id": 20}, {"before_id": 10},
], ids=["me", "one-status", "two-statuses", "kind", "me-status-deep-cursor", "deep-cursor"])
def test_job_pages_walk_an_index(db: Database, lab: dict[str, int], filters: dict[str, Any]) -> None:
    args = {k: v for k, v in filters.items() if k != "owner"}
    owner_id = lab[filters["owner"]] if "owner" in filters else None

    def page(s: Session) -> None:
        list_jobs(session=s, owner_id=owner_id, limit=5, **args)

    assert whole_scans(db, page) == []
    if len(filters.get("statuses", ())) < 2:  # one key: the index holds the page in id order, newest first
        assert whole_scans(db, page, SORT) == []


def test_devices_newest_sample_is_one_probe_per_device(db: Database, lab: dict[str, int]) -> None:
    with db.reading() as s:
        assert latest_samples(session=s)[GPU].t > utcnow() - timedelta(minutes=1)
    assert whole_scans(db, lambda s: latest_samples(session=s)) == []


def test_usage_over_a_month_reads_windows_of_the_indexes(db: Database, lab: dict[str, int]) -> None:
    since = utcnow() - timedelta(days=30)
    rows = whole_scans(db, lambda s: usage_report(s, since=since, group_by="member"))
    assert rows == []
    with db.reading() as s:
        report = {r.key: r for r in usage_report(s, since=since, group_by="member")}
    # Readings at 50 % cover the last day only: jobs before it count allocated hours, not used ones.
    assert 0 < report["ann"].gpu_used_hours < report["ann"].gpu_hours / 2


def test_one_jobs_usage_reads_its_own_samples(db: Database, lab: dict[str, int]) -> None:
    with db.reading() as s:
        job_id = s.scalar(text("SELECT min(id) FROM jobs WHERE status = 'succeeded'"))
        usage = job_usage(s, job_id=job_id, idle_minutes=30, idle_pct=5)
    assert usage is not None and usage.mean_utilization_pct == 50.0
    assert whole_scans(db, lambda s: job_usage(s, job_id=job_id, idle_minutes=30, idle_pct=5)) == []


def test_housekeeping_finds_newly_finished_jobs_by_their_finish_time(db: Database, lab: dict[str, int]) -> None:
    since = utcnow() - timedelta(hours=8)
    with db.writing() as s:  # two of those finished since with enough events to be summarised
        s.execute(update(Job).where(Job.status == "succeeded").values(event_seq=CHART_POINTS + 1))
        s.commit()
    with db.reading() as s:
        assert len(jobs_to_summarise(session=s, since=since)) == 2

    def todo(s: Session) -> None:
        jobs_to_summarise(session=s, since=since)

    assert whole_scans(db, todo) == []
    # By (finished_at), not (status, id): that one reads every job that ever finished.
    assert whole_scans(db, todo, re.compile(r"ix_jobs_finished_at")) != []


def test_a_finished_jobs_chart_is_one_row(db: Database, lab: dict[str, int]) -> None:
    with db.writing() as s:
        job = s.scalars(select(Job).where(Job.status == "succeeded").limit(1)).one()
        one = {"name": "loss", "count": 1, "downsampled": False, "step": [1], "value": [0.5]}
        s.add(JobMetricSummary(job_id=job.id, attempt=job.attempt, event_seq=job.event_seq, points=CHART_POINTS,
                               series=[one]))
        s.commit()

    def chart(s: Session) -> None:
        got = chart_series(session=s, job=s.get_one(Job, job.id))
        assert [m.value for m in got] == [[0.5]]

    with db.reading() as s, statements(s) as seen:
        chart(s)
    assert not any("job_metrics" in statement for statement, _ in seen)
    assert whole_scans(db, chart) == []


def test_folded_reads_and_the_fold_itself_read_windows_of_the_indexes(db: Database, lab: dict[str, int]) -> None:
    later = utcnow() + timedelta(hours=1)  # every final job is past the fold's grace
    assert whole_scans(db, lambda s: fold_final_jobs(session=s, now=later)) == []
    with db.reading() as s:
        assert s.scalar(text("SELECT count(*) FROM jobs WHERE utilization_readings IS NOT NULL")) == 15
    # /metrics counts only the unfolded jobs at a scrape; /usage sums the folded ones.
    assert whole_scans(db, lambda s: job_totals(session=s)) == []
    since = utcnow() - timedelta(days=30)
    assert whole_scans(db, lambda s: usage_report(s, since=since, group_by="member")) == []


@pytest.mark.parametrize("mine", [False, True], ids=["page", "my-page"])
def test_a_queue_page_reads_the_pending_jobs_through_an_index(db: Database, lab: dict[str, int], settings: Settings,
                                                              mine: bool) -> None:
    """/queue: pending jobs in start order (sorted by the database: fair share reorders them),
    the devices' load and fair-share usage, without reading the jobs table whole."""
    def page(s: Session) -> None:
        assert queue_page(s, settings=settings, owner_id=lab["ann"] if mine else None, limit=3).entries

    assert whole_scans(db, page) == []
