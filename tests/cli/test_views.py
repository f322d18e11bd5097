"""Terminal views: what `gpulab devices` and `gpulab top` print for a gang."""

from __future__ import annotations

from rich.console import Console

from cli.views import top_view


def test_top_shows_a_gang_on_each_of_its_devices_and_counts_it_once() -> None:
    gang = {"id": 7, "owner": "ada", "kind": "command", "status": "running", "gpu_memory_gb": None}
    devices = [{"id": f"lab/cuda:{i}", "name": "NVIDIA H100", "state": "online", "jobs": [gang]} for i in (0, 1)]
    console = Console(width=160, record=True)
    console.print(top_view(devices, {"items": [], "total": 0, "matching": 0, "dispatcher_active": True}))
    text = console.export_text()
    assert "2 device(s), 1 running, 0 pending" in text, text
    assert text.count("7 ada command") == 2, text


def test_show_says_how_long_a_job_has_waited_or_run_so_far() -> None:
    import re
    from datetime import UTC, datetime, timedelta

    from cli.views import job_summary

    def shown(**job: object) -> str:
        base = {"id": 7, "kind": "command", "status": "running", "owner": "alice", "device_id": "vm/cpu",
                "device_request": "cpu", "attempt": 1, "max_attempts": 1, "seed": 1, "wait_seconds": 0.3,
                "run_seconds": None, "created_at": "2026-11-30T10:17:27Z", "started_at": None}
        console = Console(width=200, record=True)
        console.print(job_summary({**base, **job}))
        return console.export_text()

    started = (datetime.now(UTC) - timedelta(minutes=19, seconds=44)).isoformat().replace("+00:00", "Z")
    running = shown(started_at=started)
    assert re.search(r"waited +0\.3 s *\n", running) and re.search(r"ran +19 min 4[45] s so far", running)
    naive = (datetime.now(UTC) - timedelta(hours=2, minutes=5)).replace(tzinfo=None).isoformat()
    assert re.search(r"waited +2 h 5 min so far", shown(status="pending", wait_seconds=None, created_at=naive))
    done = shown(status="succeeded", run_seconds=1184.04, finished_at="2026-11-30T10:37:11Z")
    assert re.search(r"ran +19 min 44 s *\n", done)


def test_usage_shows_minutes_long_jobs_and_the_cpu_time_used() -> None:
    """A lab's first week of CPU jobs read "0.00" in every hours column, and the CPU time used
    (on the dashboard and in --json) had no column at all."""
    from cli.views import usage_table

    row = {"key": "alice", "jobs": 11, "outcomes": {"succeeded": 11}, "gpu_hours": 0.0, "gpu_used_hours": 0.0,
           "cpu_hours": 3.3 / 60, "cpu_used_hours": 53.9 / 3600, "mean_wait_s": 3.9}
    big = {**row, "key": "bob", "gpu_hours": 2.5, "gpu_used_hours": 1.25}
    console = Console(width=200, record=True)
    console.print(usage_table({"group_by": "member", "rows": [row, big]}))
    lines = console.export_text().splitlines()
    assert lines[0].split() == ["member", "jobs", "outcomes", "GPU", "time", "GPU", "used", "CPU", "time", "CPU",
                                "used", "mean", "wait"], lines[0]
    assert lines[1].split()[4:] == ["0", "0", "3.3", "min", "53.9", "s", "3.9s"], lines[1]
    assert lines[2].split()[4:8] == ["2.50", "h", "1.25", "h"], lines[2]


def test_usage_heading_gives_the_window_in_utc() -> None:
    """`gpulab usage --since 2026-11-30T10:00:00+05:00` printed "since 2026-11-30T10:00:00"."""
    from cli.views import usage_heading

    assert usage_heading({"since": "2026-11-30T10:00:00+05:00", "group_by": "member"}) == (
        "usage since 2026-11-30 05:00:00 UTC by member")
    assert usage_heading({"since": "2026-11-23T17:10:21.5Z", "group_by": "kind"}) == (
        "usage since 2026-11-23 17:10:21 UTC by kind")
