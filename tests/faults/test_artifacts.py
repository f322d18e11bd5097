"""Artifacts never follow a link out of the job's folder (recording or serving), and a full
disk fails the job as `disk_full` without recording the files it may have cut short.

Before: an artifact that was a symlink served /etc/shadow; on a full disk truncated files were
recorded and the reason was an opaque RuntimeError.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.artifacts import ArtifactRefused, is_disk_full, open_artifact, record_artifacts, safe_artifact_size
from tests.faults.conftest import own_stack
from tests.support import services
from tests.support.stack import Stack

SECRET = "a file outside every job's folder\n"


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real 2 MiB filesystem for the artifacts, so a job can really fill it."""
    mount = tmp_path_factory.mktemp("small-disk")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        services.unavailable(f"a 2 MiB tmpfs (mount needs root: {done.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="module")
def files_stack(tmp_path_factory: pytest.TempPathFactory, small_disk: Path) -> Iterator[Stack]:
    with own_stack("sqlite", tmp_path_factory.mktemp("artifacts-stack"),
                   env={"GPULAB_ARTIFACTS_DIR": str(small_disk)}) as stack:
        yield stack


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("outside") / "secret.txt"
    path.write_text(SECRET)
    return path


def test_a_link_left_by_a_job_is_not_recorded(files_stack: Stack, secret: Path) -> None:
    job = files_stack.wait_for(files_stack.submit("test-files", {"link_to": str(secret)})["id"])
    assert job["status"] == "succeeded", job
    names = {a["name"] for a in files_stack.api("GET", f"/jobs/{job['id']}/artifacts")}
    assert names == {"note.txt"}
    r = files_stack.http.get(f"/jobs/{job['id']}/artifacts/leak.txt")
    assert r.status_code == 404 and SECRET not in r.text


def test_a_link_swapped_in_after_recording_is_not_served(files_stack: Stack, small_disk: Path,
                                                         secret: Path) -> None:
    job = files_stack.wait_for(files_stack.submit("test-files")["id"])
    url = f"/jobs/{job['id']}/artifacts/note.txt"
    assert files_stack.http.get(url).text == "a regular artifact"
    note = small_disk / str(job["id"]) / "note.txt"
    note.unlink()
    note.symlink_to(secret)
    r = files_stack.http.get(url)
    assert r.status_code == 404, r.text
    assert SECRET not in r.text and r.headers["content-type"].startswith("application/problem+json")
    # The job's folder itself replaced by a link: nothing under it is served either.
    folder = small_disk / str(job["id"])
    moved = folder.with_name(f"{job['id']}-moved")
    folder.rename(moved)
    folder.symlink_to(moved)
    (moved / "note.txt").unlink()
    (moved / "note.txt").write_text("not reachable through a link")
    assert files_stack.http.get(url).status_code == 404


def test_a_full_disk_fails_the_job_as_disk_full_and_records_nothing(files_stack: Stack) -> None:
    job = files_stack.wait_for(files_stack.submit("test-files", {"write_mb": 8})["id"])
    assert (job["status"], job["reason"]) == ("failed", "disk_full"), job
    assert job["error"].startswith("disk full"), job["error"]
    assert "\n" not in job["error"] and "Traceback" not in job["error"], job["error"]  # one line to act on
    # big.bin is on disk, cut short at the 2 MiB limit; it is not an artifact, nor is anything else.
    assert files_stack.api("GET", f"/jobs/{job['id']}/artifacts") == []
    assert files_stack.http.get(f"/jobs/{job['id']}/artifacts/big.bin").status_code == 404
    # The disk has room again once that job's files go: later jobs record as before.
    for path in (Path(files_stack.env["GPULAB_ARTIFACTS_DIR"]) / str(job["id"])).iterdir():
        path.unlink()
    again = files_stack.wait_for(files_stack.submit("test-files")["id"])
    assert [a["name"] for a in files_stack.api("GET", f"/jobs/{again['id']}/artifacts")] == ["note.txt"]


def test_the_recording_helper_refuses_every_kind_of_link(tmp_path: Path, secret: Path) -> None:
    """The one helper every recorder uses (job contexts, command outputs): only regular files."""
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "plain.txt").write_text("plain")
    (folder / "outside.txt").symlink_to(secret)
    (folder / "inside.txt").symlink_to(folder / "plain.txt")
    (folder / "dangling.txt").symlink_to(tmp_path / "nothing")
    (folder / "sub").mkdir()
    os.mkfifo(folder / "fifo")
    names = ["plain.txt", "outside.txt", "inside.txt", "dangling.txt", "sub", "fifo", "missing", "../job/plain.txt"]
    assert record_artifacts(folder, names) == [("plain.txt", 5)]
    assert record_artifacts(folder, names, disk_full=True) == []
    assert safe_artifact_size(folder, "outside.txt") is None
    with pytest.raises(ArtifactRefused):
        open_artifact(folder, "outside.txt")
    linked = tmp_path / "linked-job"
    linked.symlink_to(folder)
    assert safe_artifact_size(linked, "plain.txt") is None


def test_torch_save_on_a_full_disk_is_a_full_disk(small_disk: Path) -> None:
    """A built-in kind's checkpoint on a full disk failed the job as `user_error` with torch's
    traceback: torch.save to a path says "unexpected pos … vs …" (from "basic_ios::clear:
    iostream error"), which was not read as a full disk."""
    import torch

    folder = small_disk / "torch-save"
    folder.mkdir()
    try:
        free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        (folder / "filler").write_bytes(b"x" * max(0, free - 4096))
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 1))
        with pytest.raises(Exception) as caught:
            torch.save({"model": model.state_dict()}, folder / "checkpoint.pt")
        assert is_disk_full(caught.value), repr(caught.value)
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
