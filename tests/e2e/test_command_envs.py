"""Python environments for command jobs: registered by an admin, picked per job; a bundle's
requirements.txt becomes a venv on top, built once as the member's account and reused.

No network: the requirement is a wheel carried in the bundle (`--no-index`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import zipfile
from collections.abc import Iterator

import pytest

from tests.support.commands import command_stack, lab_python_env, tar_bytes
from tests.support.stack import Stack

MAIN = b"""
import tinypkg, torch
print("GPULAB {\\"result\\": {\\"value\\": %d, \\"torch\\": \\"%s\\"}}" % (tinypkg.VALUE, torch.__version__))
"""


def wheel(value: int = 42) -> bytes:
    """A pure-Python wheel of a one-module package, built by hand."""
    files = {"tinypkg/__init__.py": f"VALUE = {value}\n".encode(),
             "tinypkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
             "tinypkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: gpulab-tests\nRoot-Is-Purelib: true\n"
                                            b"Tag: py3-none-any\n"}
    record = ""
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    record += "tinypkg-0.1.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("tinypkg-0.1.dist-info/RECORD", record)
    return buf.getvalue()


@pytest.fixture(scope="module")
def env_stack() -> Iterator[Stack]:
    for stack in command_stack("sqlite"):
        prefix = lab_python_env(stack.state_dir.parent)
        out = stack.gpulab("envs", "add", "lab", str(prefix), env={"GPULAB_TOKEN": stack.token})
        assert "lab" in out.stdout
        yield stack


def bundle(stack: Stack, requirements: bytes, value: int = 42) -> str:
    assert stack.http is not None
    data = tar_bytes({"main.py": MAIN, "requirements.txt": requirements,
                      "wheels/tinypkg-0.1-py3-none-any.whl": wheel(value)})
    return str(stack.http.post("/bundles", content=data).json()["sha256"])


def logs(stack: Stack, job_id: int) -> list[str]:
    return [e["message"] for e in stack.api("GET", f"/jobs/{job_id}/events", params={"type": "log"})["items"]]


def test_envs_are_listed(env_stack: Stack) -> None:
    listed = env_stack.gpulab("envs", env={"GPULAB_TOKEN": env_stack.token}).stdout
    assert listed.split()[0] == "lab" and listed.split()[1].endswith("pyenv")
    assert [e["name"] for e in env_stack.api("GET", "/envs")] == ["lab"]


def test_requirements_build_a_venv_on_the_environment_once(env_stack: Stack) -> None:
    sha = bundle(env_stack, b"--no-index\n./wheels/tinypkg-0.1-py3-none-any.whl\n")
    params = {"argv": ["python", "main.py"], "bundle": sha, "python_env": "lab"}
    first = env_stack.wait_for(env_stack.submit("command", params)["id"], timeout=180)
    assert first["status"] == "succeeded", first["error"]
    assert first["result"]["value"] == 42 and first["result"]["torch"]  # torch from the base environment
    assert any("Successfully installed tinypkg" in line for line in logs(env_stack, first["id"]))
    second = env_stack.wait_for(env_stack.submit("command", params)["id"], timeout=120)
    assert second["status"] == "succeeded", second["error"]
    lines = logs(env_stack, second["id"])
    assert any("reusing the environment" in line for line in lines)
    assert not any("Successfully installed" in line for line in lines)
    # The same line, a rebuilt wheel behind it: a new environment, not the stale one.
    rebuilt = {**params, "bundle": bundle(env_stack, b"--no-index\n./wheels/tinypkg-0.1-py3-none-any.whl\n", 43)}
    third = env_stack.wait_for(env_stack.submit("command", rebuilt)["id"], timeout=180)
    assert third["status"] == "succeeded", third["error"]
    assert third["result"]["value"] == 43


def test_an_editable_project_line_is_refused_before_building(env_stack: Stack) -> None:
    sha = bundle(env_stack, b"-e .\n")
    done = env_stack.wait_for(env_stack.submit("command", {"argv": ["python", "main.py"], "bundle": sha,
                                                          "python_env": "lab"})["id"], timeout=120)
    assert (done["status"], done["reason"]) == ("failed", "env_build_failed"), done
    assert "requirements.txt line 1: `-e .` installs the project in place" in done["error"]


def test_a_failed_build_has_its_own_reason(env_stack: Stack) -> None:
    sha = bundle(env_stack, b"--no-index\nno-such-package-gpulab==9.9\n")
    done = env_stack.wait_for(env_stack.submit("command", {"argv": ["python", "main.py"], "bundle": sha,
                                                          "python_env": "lab"})["id"], timeout=180)
    assert (done["status"], done["reason"]) == ("failed", "env_build_failed"), done
    assert "pip install -r requirements.txt" in done["error"]
    assert any("no-such-package-gpulab" in line for line in logs(env_stack, done["id"]))


def test_torch_in_requirements_is_met_by_the_environment_offline(env_stack: Stack) -> None:
    """pytorch/examples' requirements.txt lists torch. The venv used to get its own pip and, with it,
    the interpreter's bundled setuptools, older than torch asks for (>=77): pip went to the index
    for setuptools, and offline the build failed. The base's pip and setuptools serve it now."""
    sha = bundle(env_stack, b"--no-index\ntorch\n./wheels/tinypkg-0.1-py3-none-any.whl\n")
    done = env_stack.wait_for(env_stack.submit("command", {"argv": ["python", "main.py"], "bundle": sha,
                                                          "python_env": "lab"})["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["value"] == 42 and done["result"]["torch"]
    assert not any(line.startswith("Collecting setuptools") for line in logs(env_stack, done["id"]))


def test_a_quiet_build_step_shows_its_lines_and_a_cancel_stops_it(env_stack: Stack) -> None:
    """pip waiting on an index that never answers. Its lines used to wait in the worker until the
    step printed again (a member saw "running" and nothing else), and a cancel was not looked at
    until the build ended or the worker killed its process after the grace."""
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        index = f"http://127.0.0.1:{silent.getsockname()[1]}/simple"
        sha = bundle(env_stack, f"--index-url {index}\nno-such-package-gpulab\n".encode())
        job = env_stack.submit("command", {"argv": ["python", "main.py"], "bundle": sha, "python_env": "lab",
                                           "env": {"PIP_TIMEOUT": "600", "PIP_RETRIES": "0"}})
        env_stack.wait(lambda: any(index in line for line in logs(env_stack, job["id"])), 60,
                       "pip's line naming the index, while pip waits on it")
        assert env_stack.job(job["id"])["status"] == "running"
        env_stack.api("POST", f"/jobs/{job['id']}/cancel")
        done = env_stack.wait_for(job["id"], timeout=60)
    assert (done["status"], done["reason"]) == ("cancelled", "cancelled"), done
    assert done["error"] == "stopped after a cancel, while building the environment", done


def test_an_environment_registered_by_mistake_can_be_removed(env_stack: Stack) -> None:
    """An admin who registered a wrong path (a typo, an environment since deleted) could only move
    it: there was no way to take a name back out of `gpulab envs`."""
    admin = {"GPULAB_TOKEN": env_stack.token}
    env_stack.gpulab("envs", "add", "typo", "/opt/nowhere", env=admin)
    assert "typo" in [e["name"] for e in env_stack.api("GET", "/envs")]
    done = env_stack.gpulab("envs", "remove", "typo", env=admin)
    assert done.stdout.strip() == "typo: removed"
    assert [e["name"] for e in env_stack.api("GET", "/envs")] == ["lab"]
    again = env_stack.gpulab("envs", "remove", "typo", env=admin, check=False)
    assert again.returncode == 1 and "no Python environment is called 'typo'; known: lab" in again.stderr
    member = env_stack.api("POST", "/users", json={"name": "env-member"}, expect=201)["token"]
    refused = env_stack.api("DELETE", "/envs/lab", token=member, expect=403)
    assert refused["code"] == "forbidden"
