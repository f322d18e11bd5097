"""Gangs end to end on the CPU: one host exposing two CPU devices (workers `--device cpu:0`, `cpu:1`)
runs a 2-rank DDP all-reduce with the gloo backend under torchrun; cancel ends both ranks.

torchrun is run as `python -m torch.distributed.run` (the same program as torch's `torchrun`
script), since the lab's environment reaches torch through a .pth and has no script of its own.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.queues import device_queue
from tests.support.commands import command_stack, with_lab_env
from tests.support.stack import Stack
from worker.command_sweep import job_processes

DDP = textwrap.dedent('''
    import os, sys, time
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    # One write per line: under torchrun (which starts ranks with -u) print() writes the text and
    # its newline apart, and two ranks printing at once into the job's one pipe glue their lines.
    sys.stdout.write(f"rank {rank} of {world}: all_reduce={value.item():g} pid={os.getpid()}\\n")
    if rank == 0:
        import gpulab_report
        gpulab_report.result({"all_reduce": value.item(), "world": world,
                              "gpulab_gpus": int(os.environ.get("GPULAB_GPUS", "0"))})
    if sys.argv[1:] == ["hang"]:
        while True:
            time.sleep(0.1)
    dist.destroy_process_group()
''')
TORCHRUN = ["python", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "ddp.py"]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gang_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    for stack in command_stack(request.param, env={"GPULAB_CANCEL_GRACE_S": "10"}):
        with_lab_env(stack)
        # One host, two CPU devices: the same grammar as cuda:N (`gpulab worker --device cpu:1`).
        for device in ("cpu:0", "cpu:1"):
            stack.add_worker(device, host="ganghost")
        yield stack


def submit(stack: Stack, tmp_path: Path, *args: str, timeout_s: int = 300) -> int:
    root = tmp_path / "ddp"
    root.mkdir(exist_ok=True)
    (root / "ddp.py").write_text(DDP)
    out = stack.gpulab("submit", "--working-dir", str(root), "--no-wait", "--python-env", "lab", "--device", "cpu",
                       "--gpus", "2", "--timeout", str(timeout_s), "--", *TORCHRUN, *args,
                       env={"GPULAB_TOKEN": stack.token})
    return int(out.stdout.strip())


def rank_lines(stack: Stack, job_id: int) -> dict[int, dict[str, float]]:
    items = stack.api("GET", f"/jobs/{job_id}/events", params={"type": "log", "limit": 500})["items"]
    ranks = {}
    for item in items:
        if m := re.search(r"rank (\d) of (\d): all_reduce=(\S+) pid=(\d+)", item.get("message") or ""):
            ranks[int(m[1])] = {"world": int(m[2]), "sum": float(m[3]), "pid": int(m[4])}
    return ranks


def wait_ranks(stack: Stack, job_id: int, timeout: float = 300) -> list[int]:
    """Wait until both ranks reported; on a timeout, fail with the job's status and log (for a diagnosis)."""
    def both_report() -> bool:
        status = stack.job(job_id)["status"]
        assert status in ("pending", "dispatched", "running"), status  # a job that ended will not report
        return len(rank_lines(stack, job_id)) == 2

    try:
        stack.wait(both_report, timeout, f"both ranks of job {job_id} to report")
    except AssertionError:
        items = stack.api("GET", f"/jobs/{job_id}/events", params={"limit": 500})["items"]
        log = "\n".join(f"{e['type']}: {e.get('message')}" for e in items)
        raise AssertionError(f"job {job_id} is {stack.job(job_id)['status']}; its events:\n{log}") from None
    return [r["pid"] for r in rank_lines(stack, job_id).values()]


def test_a_request_no_host_can_hold_is_refused_with_the_hosts_and_counts(gang_stack: Stack) -> None:
    r = gang_stack.http.post("/jobs", json={"kind": "test-echo", "device": "cpu", "gpus": 3})  # type: ignore[union-attr]
    assert r.status_code == 422, r.text
    body = r.json()
    assert (body["code"], body["field"], body["value"]) == ("invalid_request", "gpus", 3)
    assert body["hosts"] == {"ganghost": 2, "testhost": 1}
    assert "ganghost has 2" in body["detail"]


@pytest.mark.timeout(420)
def test_two_rank_ddp_all_reduce_runs_on_both_cpu_devices_of_one_host(gang_stack: Stack, tmp_path: Path) -> None:
    job_id = submit(gang_stack, tmp_path)
    done = gang_stack.wait_for(job_id, timeout=300)
    assert done["status"] == "succeeded", done
    assert done["gpus"] == 2 and done["device_id"] == "ganghost/cpu:0"  # the leader, first in bus order
    # 1 + 2 summed over both ranks, seen by each rank.
    ranks = rank_lines(gang_stack, job_id)
    assert sorted(ranks) == [0, 1] and all(r == {**r, "world": 2, "sum": 3.0} for r in ranks.values())
    assert done["result"]["all_reduce"] == 3.0 and done["result"]["gpulab_gpus"] == 2
    events = gang_stack.api("GET", f"/jobs/{job_id}/events", params={"type": "status"})["items"]
    assert any("ganghost/cpu:0, ganghost/cpu:1" in (e.get("message") or "") for e in events)


@pytest.mark.timeout(420)
def test_a_gang_shows_on_both_devices_and_cancel_ends_both_ranks(gang_stack: Stack, tmp_path: Path) -> None:
    job_id = submit(gang_stack, tmp_path, "hang")
    pids = wait_ranks(gang_stack, job_id)
    devices = {d["id"]: d for d in gang_stack.api("GET", "/devices")}
    for i in (0, 1):  # the gang's job on each of its devices
        assert job_id in [j["id"] for j in devices[f"ganghost/cpu:{i}"]["jobs"]], devices[f"ganghost/cpu:{i}"]
    gang_stack.api("POST", f"/jobs/{job_id}/cancel")
    done = gang_stack.wait_for(job_id, timeout=60)
    assert done["status"] == "cancelled", done
    gang_stack.wait(lambda: not any(_is_rank(pid) for pid in pids), 30, f"ranks {pids} to end")
    devices = {d["id"]: d for d in gang_stack.api("GET", "/devices")}
    assert devices["ganghost/cpu:0"]["jobs"] == devices["ganghost/cpu:1"]["jobs"] == []


def _is_rank(pid: int) -> bool:
    try:
        return b"ddp.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.timeout(300)
def test_a_waiting_gang_holds_what_frees_and_only_jobs_that_end_first_backfill(gang_stack: Stack) -> None:
    blocker = gang_stack.submit("test-sleep", {"seconds": 20}, device="ganghost/cpu:1", timeout_s=60)["id"]
    gang_stack.wait_for(blocker, ("running",), timeout=60)
    gang = gang_stack.submit("command", {"argv": ["python", "-c", "print('gang ran')"], "python_env": "lab"},
                             device="cpu", gpus=2, timeout_s=60)["id"]

    def entry(job_id: int) -> dict:
        return next(e for e in gang_stack.api("GET", "/queue")["items"] if e["job_id"] == job_id)

    gang_stack.wait(lambda: entry(gang)["reason"] == "assembling_gang", 30, "the gang to assemble")
    assert (entry(gang)["gpus"], entry(gang)["gang_ready"]) == (2, 1)
    shown = gang_stack.gpulab("queue", env={"GPULAB_TOKEN": gang_stack.token}).stdout
    assert "assembling_gang (1 of 2 free)" in shown and "2 × cpu" in shown, shown
    # cpu:0 is held: a job whose limit ends before the blocker's may use it, a longer one may not.
    long = gang_stack.submit("test-echo", {}, device="ganghost/cpu:0", timeout_s=600)["id"]
    short = gang_stack.submit("test-echo", {}, device="ganghost/cpu:0", timeout_s=5)["id"]
    assert gang_stack.wait_for(short, timeout=60)["status"] == "succeeded"
    assert gang_stack.job(long)["status"] == "pending" and entry(long)["reason"] == "priority"
    gang_stack.api("POST", f"/jobs/{blocker}/cancel")
    done = gang_stack.wait_for(gang, timeout=120)
    assert done["status"] == "succeeded", done
    # Behind the gang, as it was in line (it may not have started yet when the gang ends).
    assert gang_stack.wait_for(long, timeout=60)["started_at"] > done["started_at"]


@pytest.mark.timeout(420)
def test_a_lost_leader_frees_both_devices_and_its_next_incarnation_ends_the_ranks(gang_stack: Stack,
                                                                                    tmp_path: Path) -> None:
    job_id = submit(gang_stack, tmp_path, "hang")
    pids = wait_ranks(gang_stack, job_id)
    # The leader's worker dies with its pool; torchrun's ranks, in sessions of their own, live on.
    gang_stack.kill("worker-ganghost/cpu:0")
    assert any(_is_rank(pid) for pid in pids)
    done = gang_stack.wait_for(job_id, timeout=120)
    assert (done["status"], done["reason"]) == ("failed", "worker_lost"), done
    devices = {d["id"]: d for d in gang_stack.api("GET", "/devices")}
    assert devices["ganghost/cpu:1"]["jobs"] == []
    gang_stack.add_worker("cpu:0", host="ganghost")  # its start ends what the lost one left
    gang_stack.wait(lambda: not any(_is_rank(pid) for pid in pids), 60, f"ranks {pids} to end")


@pytest.mark.timeout(300)
# On one database: ending the ranks is the worker's (process groups, the sweep), and the 40 s
# the limit must leave torchrun to start its ranks on a busy machine is the suite's longest wait.
@pytest.mark.parametrize("gang_stack", ["sqlite"], indirect=True)
def test_the_time_limit_ends_every_rank(gang_stack: Stack, tmp_path: Path) -> None:
    job_id = submit(gang_stack, tmp_path, "hang", timeout_s=40)
    done = gang_stack.wait_for(job_id, timeout=200)
    assert (done["status"], done["reason"]) == ("failed", "timeout"), (done["error"], done["result"])
    queue = device_queue(done["device_id"], gang_stack.installation)
    gang_stack.wait(lambda: not job_processes(job_id, done["attempt"], queue), 30, f"job {job_id}'s processes to end")
    devices = {d["id"]: d for d in gang_stack.api("GET", "/devices")}
    assert devices["ganghost/cpu:0"]["jobs"] == devices["ganghost/cpu:1"]["jobs"] == []


@pytest.mark.timeout(420)
def test_a_lost_non_leader_ends_the_gang_and_frees_both_devices(gang_stack: Stack, tmp_path: Path) -> None:
    job_id = submit(gang_stack, tmp_path, "hang")
    pids = wait_ranks(gang_stack, job_id)
    # cpu:1's worker runs nothing of the gang (the leader on cpu:0 started torchrun), yet its
    # device is one of the gang's: its loss ends the job like the leader's would.
    gang_stack.kill("worker-ganghost/cpu:1")
    try:
        done = gang_stack.wait_for(job_id, timeout=120)
        assert (done["status"], done["reason"]) == ("failed", "worker_lost"), done
        assert "ganghost/cpu:1 stopped answering" in done["error"], done["error"]
        # The leader's worker lives: it sees the job end and stops every rank.
        gang_stack.wait(lambda: not any(_is_rank(pid) for pid in pids), 60, f"ranks {pids} to end")
        devices = {d["id"]: d for d in gang_stack.api("GET", "/devices")}
        assert devices["ganghost/cpu:0"]["jobs"] == devices["ganghost/cpu:1"]["jobs"] == []
    finally:
        gang_stack.add_worker("cpu:1", host="ganghost")
