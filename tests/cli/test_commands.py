"""The CLI against a real stack: log text on stdout, unwrapped when piped, decorations on
stderr; `show` as a summary; `--json` for scripts; list params built for list-typed params."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.stack import Stack

pytestmark = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)

LONG = "x" * 150 + " the end"  # longer than the 80 columns a pipe got before


def gpulab(stack: Stack, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    return stack.gpulab(*args, check=check, env={"GPULAB_TOKEN": stack.token})


def test_logs_go_to_stdout_unwrapped_and_status_to_stderr(stack: Stack) -> None:
    job = stack.wait_for(stack.submit("test-echo", {"message": LONG, "lines": 45})["id"])
    expected = [f"{LONG} {i}" for i in range(45)]
    for args in (("logs", str(job["id"])), ("logs", str(job["id"]), "-f")):
        result = gpulab(stack, *args)
        lines = result.stdout.splitlines()
        # The job's lines exactly, then the worker's own closing line of the log.
        assert lines[:45] == expected and len(lines) == 46 and lines[45].startswith("succeeded after"), args
        assert "succeeded" in result.stderr and LONG not in result.stderr


def test_show_is_a_summary_and_json_for_scripts(stack: Stack) -> None:
    job = stack.wait_for(stack.submit("test-echo", {"message": "shown"})["id"])
    text = gpulab(stack, "show", str(job["id"])).stdout
    for needle in (f"job {job['id']}", "test-echo", "succeeded", "testhost/cpu", "submitted", "ran",
                   "message", "shown"):
        assert needle in text, (needle, text)
    assert not text.lstrip().startswith("{")
    assert json.loads(gpulab(stack, "show", str(job["id"]), "--json").stdout)["result"]["message"] == "shown"


@pytest.mark.parametrize(("args", "key"), [
    (("jobs", "--json"), "items"), (("queue", "--json"), "items"), (("usage", "--json"), "rows"),
])
def test_json_on_lists(stack: Stack, args: tuple[str, ...], key: str) -> None:
    assert key in json.loads(gpulab(stack, *args).stdout)


def test_devices_json(stack: Stack) -> None:
    devices = json.loads(gpulab(stack, "devices", "--json").stdout)
    assert any(d["id"] == "testhost/cpu" for d in devices)


def test_list_params_build_a_list_and_a_failed_submit_is_one_line(stack: Stack) -> None:
    result = gpulab(stack, "submit", "device-compare", "-p", "sizes=64", "-p", "sizes=128", "-p", "repeats=1",
                          "--no-wait")
    job_id = int(result.stdout)
    # Waited for, not cancelled: a cancel raced the small job's end (409 job_finished).
    done = stack.wait_for(job_id)
    assert done["params"]["sizes"] == [64, 128] and done["status"] == "succeeded", done
    bad = gpulab(stack, "submit", "test-echo", "-p", "lines=-5", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "invalid_params" in bad.stderr and "lines" in bad.stderr


def test_a_cancelled_job_says_cancelled_once(stack: Stack) -> None:
    """The reason `cancelled` only repeats the status: `cancelled`, not `cancelled (cancelled)`."""
    job_id = stack.submit("test-sleep", {"seconds": 60})["id"]
    gpulab(stack, "cancel", str(job_id))
    stack.wait_for(job_id)
    for args in (("jobs",), ("show", str(job_id))):
        text = gpulab(stack, *args).stdout
        assert "cancelled" in text and "cancelled (cancelled)" not in text, (args, text)
    assert "(cancelled)" not in gpulab(stack, "logs", str(job_id)).stdout


def test_cancel_takes_several_jobs_and_goes_on_past_a_refusal(stack: Stack) -> None:
    """An admin clearing a member's runaway jobs typed `gpulab cancel 15 16` and got "unexpected
    extra argument"."""
    finished = stack.wait_for(stack.submit("test-echo", {"message": "done"})["id"])["id"]
    first, second = (stack.submit("test-sleep", {"seconds": 60})["id"] for _ in range(2))
    result = gpulab(stack, "cancel", str(first), str(finished), str(second), check=False)
    assert result.returncode == 1, result.stderr
    assert f"error: job {finished}: job_finished" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert f"job {first}: " in result.stdout and f"job {second}: " in result.stdout, result.stdout
    assert [stack.wait_for(i)["status"] for i in (first, second)] == ["cancelled", "cancelled"]


def test_top_off_a_terminal_prints_one_frame_and_exits(stack: Stack) -> None:
    """Piped or redirected, a live view would print nothing until Ctrl-C."""
    result = stack.gpulab("top", env={"GPULAB_TOKEN": stack.token}, timeout=60)
    assert result.returncode == 0 and "testhost/cpu" in result.stdout and "queue" in result.stdout, result


def test_a_failed_submit_says_a_one_line_error_once_and_a_traceback_in_full(stack: Stack) -> None:
    one = gpulab(stack, "submit", "test-fail", "-p", "message=the data folder is empty", check=False)
    assert one.returncode == 1 and one.stderr.count("the data folder is empty") == 1, one.stderr
    traced = gpulab(stack, "submit", "test-fail", "-p", "mode=exception", check=False)
    assert traced.returncode == 1 and "Traceback" in traced.stderr, traced.stderr


def test_kinds_say_which_params_are_required(stack: Stack) -> None:
    text = gpulab(stack, "kinds").stdout
    assert "from_job (required)" in text and "argv (required)" in text and "env={}" in text, text
    assert "=?" not in text
    # Defaults as -p takes them back: JSON's null, not Python's None.
    assert "data_dir=null" in text and "=None" not in text, text


def test_users_add_prints_only_the_token_and_says_what_to_do_with_it(stack: Stack) -> None:
    result = stack.gpulab("users", "add", "erin")
    assert result.stdout.strip().startswith("glab_") and len(result.stdout.split()) == 1, result.stdout
    assert "erin runs `gpulab login TOKEN`" in result.stderr, result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="Celery warns only a root worker")
def test_a_root_worker_is_not_told_root_is_not_recommended(stack: Stack) -> None:
    """Workers run as root by design (to switch to members' accounts); Celery's warning said otherwise."""
    text = "".join(p.read_text(errors="replace") for p in stack.logs.glob("worker*.log"))
    assert "ready." in text and "superuser privileges" not in text


def test_a_followed_job_shows_its_milestones_on_stderr(stack: Stack) -> None:
    """A kind's progress messages ("n=16 done", "epoch 3: accuracy …") were shown by `gpulab run` only."""
    result = gpulab(stack, "submit", "device-compare", "-p", "sizes=16", "-p", "repeats=1")
    assert "n=16 done" in result.stderr and "n=16 done" not in result.stdout, result.stderr


def test_users_alone_lists_them_and_revoke_names_who_is_locked_out(stack: Stack) -> None:
    """An admin's first hour: `gpulab users` printed its help with exit 2 (`gpulab envs` lists),
    `users revoke` of a mistyped name said "revoked 0 token(s)" and exited 0, and `users list`
    showed a revoked member exactly like one who can work."""
    name = f"leaver-{os.getpid()}"
    stack.api("POST", "/users", json={"name": name}, expect=201)
    listed = stack.gpulab("users")
    assert listed.returncode == 0 and f"{name}\n" in listed.stdout, listed.stdout
    stack.gpulab("users", "revoke", name)
    assert f"{name} (no token: `gpulab users token NAME` issues one)" in stack.gpulab("users", "list").stdout
    stack.gpulab("users", "token", name)
    assert f"{name}\n" in stack.gpulab("users", "list").stdout
    typo = stack.gpulab("users", "revoke", f"{name}x", check=False)
    assert typo.returncode == 1 and f"not_found: no user is called '{name}x'" in typo.stderr, typo.stderr
