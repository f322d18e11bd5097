"""Several hosts on one Redis and one database: pinning, refusal, drain, fair share, a lost worker.

The workers are CPU workers started under distinct host names, as the workers of other
servers would be; their device ids carry the host, and placement spans them.
"""

from __future__ import annotations

import json

import pytest

from tests.support.stack import Stack

HOSTS = ("testhost/cpu", "hostA/cpu", "hostB/cpu")


@pytest.fixture(scope="module")
def lab(sqlite_stack: Stack) -> Stack:
    for device_id in [sqlite_stack.spawn_worker("cpu", host=host) for host in ("hostA", "hostB")]:
        sqlite_stack.wait_online(device_id)
    return sqlite_stack


def cli_env(stack: Stack) -> dict[str, str]:
    return {"GPULAB_TOKEN": stack.token}


def queue_entry(stack: Stack, job_id: int) -> dict:
    items = stack.api("GET", "/queue")["items"]
    return next(e for e in items if e["job_id"] == job_id)


def statuses(stack: Stack, job_id: int) -> list[str]:
    events = stack.api("GET", f"/jobs/{job_id}/events", params={"type": "status"})["items"]
    return [e["data"]["status"] for e in events]


def test_jobs_pin_to_devices_on_every_host(lab: Stack) -> None:
    devices = {d["id"]: d for d in lab.api("GET", "/devices")}
    assert set(HOSTS) <= set(devices)
    assert {devices[d]["host"] for d in HOSTS} == {"testhost", "hostA", "hostB"}
    pinned = {device: lab.submit("test-echo", {"lines": 0, "steps": 0}, device=device)["id"] for device in HOSTS}
    for device, job_id in pinned.items():
        done = lab.wait_for(job_id)
        assert (done["status"], done["device_id"], done["result"]["device"]) == ("succeeded", device, "cpu")
    # Any CPU: three jobs at once spread over the three hosts.
    spread = [lab.submit("test-sleep", {"seconds": 1.5}, device="cpu")["id"] for _ in HOSTS]
    assert {lab.wait_for(j)["device_id"] for j in spread} == set(HOSTS)


def test_a_request_no_device_could_satisfy_is_refused_with_the_devices(lab: Stack) -> None:
    for device in ("hostC/cpu", "cuda:0", "gpu", "model=H100"):
        problem = lab.api("POST", "/jobs", json={"kind": "test-echo", "device": device}, expect=422)
        assert (problem["code"], problem["field"], problem["value"]) == ("unknown_device", "device", device)
        assert set(HOSTS) <= {d["id"] for d in problem["devices"]}


def test_drain_holds_new_jobs_with_a_visible_reason_until_resume(lab: Stack) -> None:
    env = cli_env(lab)
    assert "draining" in lab.gpulab("devices", "drain", "hostB/cpu", env=env).stdout
    try:
        held = lab.submit("test-echo", {"lines": 0}, device="hostB/cpu")["id"]
        elsewhere = lab.submit("test-echo", {"lines": 0}, device="cpu")["id"]
        assert lab.wait_for(elsewhere)["device_id"] != "hostB/cpu"
        assert lab.job(held)["status"] == "pending"
        assert queue_entry(lab, held)["reason"] == "device_draining"
        shown = json.loads(lab.gpulab("queue", "--json", env=env).stdout)
        assert any(e["job_id"] == held and e["reason"] == "device_draining" for e in shown["items"])
        assert "device_draining" in lab.gpulab("queue", env=env).stdout
    finally:
        assert "online" in lab.gpulab("devices", "resume", "hostB/cpu", env=env).stdout
    assert lab.wait_for(held)["device_id"] == "hostB/cpu"


def test_member_with_less_usage_goes_first_and_the_other_sees_fair_share(lab: Stack) -> None:
    alice = lab.gpulab("users", "add", "alice").stdout.strip()
    bob = lab.gpulab("users", "add", "bob").stdout.strip()
    # Alice has used a device recently; Bob has not.
    assert lab.wait_for(lab.submit("test-sleep", {"seconds": 0.5}, token=alice, device="cpu")["id"])["status"] \
        == "succeeded"
    blocker = lab.submit("test-sleep", {"seconds": 30}, device="hostB/cpu")["id"]
    lab.wait_for(blocker, ("running",))
    first = lab.submit("test-echo", {"lines": 0}, token=alice, device="hostB/cpu")["id"]
    second = lab.submit("test-echo", {"lines": 0}, token=bob, device="hostB/cpu")["id"]

    def both_waiting() -> bool:
        items = [e for e in lab.api("GET", "/queue")["items"] if e["job_id"] in (first, second)]
        return [(e["job_id"], e["reason"]) for e in items] == [(second, "device_busy"), (first, "fair_share")]

    lab.wait(both_waiting, 10, "bob's job to be first in line and alice's to wait for fair share")
    assert "fair_share" in lab.gpulab("queue", env=cli_env(lab)).stdout
    lab.api("POST", f"/jobs/{blocker}/cancel")
    done_bob, done_alice = lab.wait_for(second), lab.wait_for(first)
    assert done_bob["started_at"] < done_alice["started_at"]


def test_a_killed_workers_job_is_retried_on_another_host(lab: Stack) -> None:
    env = cli_env(lab)
    # Only testhost/cpu takes the job; once its worker is killed under it, the others open again.
    # (Killed before the two resume commands: on a busy machine they outlasted the job's 3 s.)
    for device in ("hostA/cpu", "hostB/cpu"):
        lab.gpulab("devices", "drain", device, env=env)
    try:
        job_id = lab.submit("test-sleep", {"seconds": 3}, device="cpu")["id"]
        running = lab.wait_for(job_id, ("running",))
        assert running["device_id"] == "testhost/cpu"
        lab.kill("worker-testhost/cpu")
    finally:
        for device in ("hostA/cpu", "hostB/cpu"):
            lab.gpulab("devices", "resume", device, env=env)
    done = lab.wait_for(job_id, timeout=30)
    assert (done["status"], done["runs"], done["attempt"]) == ("succeeded", 2, 2)
    assert done["device_id"] in ("hostA/cpu", "hostB/cpu")
    assert statuses(lab, job_id) == ["pending", "dispatched", "running", "pending", "dispatched", "running",
                                     "succeeded"]
    devices = {d["id"]: d["state"] for d in lab.api("GET", "/devices")}
    assert devices["testhost/cpu"] == "offline"


def test_the_queue_pages_and_shows_a_member_their_own_places(lab: Stack) -> None:
    tokens = [lab.api("POST", "/users", json={"name": f"q{n}{lab.port}"})["token"] for n in range(2)]
    busy = lab.submit("test-sleep", {"seconds": 60}, device="hostA/cpu")
    lab.wait_for(busy["id"], ("running",))
    mine, theirs = [], []
    try:
        for n in range(5):  # interleaved: positions 1..5 alternate between the two members
            target = mine if n % 2 == 0 else theirs
            target.append(lab.submit("test-echo", {}, device="hostA/cpu", token=tokens[n % 2])["id"])
        whole = lab.api("GET", "/queue")
        position = {e["job_id"]: e["position"] for e in whole["items"]}
        assert whole["total"] == whole["matching"] >= 5 and len(whole["items"]) == whole["total"]
        own = lab.api("GET", "/queue", params={"me": True}, token=tokens[0])
        assert [e["job_id"] for e in own["items"]] == mine and own["matching"] == 3
        assert [e["position"] for e in own["items"]] == [position[j] for j in mine]  # places in the whole queue
        head = lab.api("GET", "/queue", params={"me": True, "limit": 2}, token=tokens[0])
        assert [e["job_id"] for e in head["items"]] == mine[:2] and head["matching"] == 3
        assert lab.api("GET", "/queue", params={"limit": 0}, expect=422)["field"] == "limit"
    finally:
        for job_id in [busy["id"], *mine, *theirs]:
            lab.api("POST", f"/jobs/{job_id}/cancel")
