"""What admins see on a live stack: device readings, workers, per-job accounting, /metrics, the CLI views."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import Stack

CPU = "testhost/cpu"


@pytest.fixture(scope="module")
def finished_job(stack: Stack) -> dict:
    job = stack.submit("test-echo", {"lines": 2, "steps": 2})
    return stack.wait_for(job["id"], ("succeeded",))


def test_devices_carry_the_workers_latest_reading(stack: Stack) -> None:
    reading: dict = {}

    def sampled() -> bool:
        reading.update(next(d for d in stack.api("GET", "/devices") if d["id"] == CPU))
        return reading["memory_used_mb"] is not None

    stack.wait(sampled, 30, "a reading of the CPU device")
    assert 0 <= reading["utilization_pct"] <= 100 and reading["sampled_at"]
    assert 0 < reading["memory_used_mb"] < reading["memory_total_mb"]
    assert reading["temperature_c"] is None  # the CPU device has no sensor reading
    points = stack.api("GET", f"/devices/{CPU}/samples", params={"since": "10m", "step": "10s"})
    assert points and all(p["memory_total_mb"] > 0 for p in points)


def test_workers_and_a_jobs_accounting(stack: Stack, finished_job: dict) -> None:
    workers = [w for w in stack.api("GET", "/workers") if w["device_id"] == CPU]
    assert workers and all(w["heartbeat_age_s"] < 10 for w in workers)
    usage = stack.api("GET", f"/usage/jobs/{finished_job['id']}")
    assert usage["device_id"] == CPU and usage["share"] == 1.0
    assert usage["allocated_seconds"] == pytest.approx(finished_job["run_seconds"], abs=0.05)
    assert usage["wait_seconds"] == pytest.approx(finished_job["wait_seconds"], abs=0.01)
    report = stack.api("GET", "/usage", params={"since": "1h", "group_by": "kind"})
    echo = next(r for r in report["rows"] if r["key"] == "test-echo")
    assert echo["outcomes"]["succeeded"] >= 1 and echo["cpu_hours"] > 0 and echo["gpu_hours"] == 0


def test_metrics_of_a_live_stack(stack: Stack, finished_job: dict) -> None:
    assert stack.http is not None
    r = stack.http.get("/metrics", headers={"Authorization": ""})  # Prometheus scrapes without a token
    assert r.status_code == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(r.text) for s in f.samples}
    assert samples[("gpulab_device_up", (("device", CPU), ("host", "testhost"), ("state", "online")))] == 1
    assert ("gpulab_cpu_utilization_percent", (("device", CPU), ("host", "testhost"))) in samples
    assert samples[("gpulab_jobs", (("status", "succeeded"),))] >= 1
    assert samples[("gpulab_job_duration_seconds_count", ())] >= 1
    assert samples[("gpulab_dispatch_latency_seconds_count", ())] >= 1


# The CLI views read the HTTP API (whose answers the tests above check on both databases).
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_cli_devices_top_and_usage(stack: Stack, finished_job: dict) -> None:
    wide = {"COLUMNS": "200", "GPULAB_TOKEN": stack.token}
    devices = stack.gpulab("devices", env=wide).stdout
    assert CPU in devices and "online" in devices and "░" in devices  # the bars' track
    top = stack.gpulab("top", "--once", env=wide).stdout
    assert CPU in top and "queue" in top and "running" in top
    usage = stack.gpulab("usage", "--since", "1h", "--by", "kind", env=wide).stdout
    assert "test-echo" in usage and "succeeded" in usage
    bad = stack.gpulab("usage", "--since", "a while", check=False, env=wide)
    assert bad.returncode == 2 and "invalid_request" in bad.stderr


def test_the_dashboard_is_served_offline(stack: Stack) -> None:
    assert stack.http is not None
    page = stack.http.get("/", headers={"Authorization": ""})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/dashboard/app.js" in page.text and "http" not in page.text.replace("http-equiv", "")
    static = Path(__file__).resolve().parents[2] / "service" / "dashboard"
    names = [p.relative_to(static).as_posix() for p in static.rglob("*") if p.suffix in (".js", ".css")]
    assert {"app.js", "api.js", "charts.js", "pages/job.js", "style.css"} <= set(names)
    for name in names:  # every module the page imports
        r = stack.http.get(f"/dashboard/{name}")
        assert r.status_code == 200 and len(r.content) > 500
        assert "cdn" not in r.text.lower() and "https://" not in r.text


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_a_second_worker_for_a_served_device_is_refused(stack: Stack) -> None:
    """An admin looking for the workers typed `gpulab workers` and started a second one for the
    stack's own device; its clean stop then marked the device offline while the first still served
    it, and nothing started there again."""
    second = stack.gpulab("worker", "--device", "cpu", "--host-name", "testhost", check=False, timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"{CPU} is served already by worker" in second.stderr and "stop it first" in second.stderr
    assert {d["id"]: d["state"] for d in stack.api("GET", "/devices")}[CPU] == "online"
    assert stack.wait_for(stack.submit("test-echo", {"message": "still served"})["id"])["status"] == "succeeded"
