"""POST /bundles: streamed, content-addressed, owned, limited; bad archives refused, nothing half-written."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.bundles import InvalidBundle, inspect, unpack
from service.db import Database
from tests.support.commands import command_stack, tar_bytes
from tests.support.stack import Stack, free_port


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def small_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A stack whose bundles may be at most 1 MiB (and that expires them after a second)."""
    yield from command_stack(request.param, env={"GPULAB_MAX_BUNDLE_MB": "1", "GPULAB_BUNDLE_KEEP_S": "1"})


def upload(stack: Stack, data: bytes, token: str | None = None) -> httpx.Response:
    assert stack.http is not None
    headers = {"Content-Type": "application/octet-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return stack.http.post("/bundles", content=data, headers=headers)


def leftovers(stack: Stack) -> list[str]:
    root = stack.state_dir / "bundles"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_upload_is_content_addressed_and_deduplicated(small_stack: Stack) -> None:
    data = tar_bytes({"train.py": b"print('hi')\n", "data/x.csv": b"1,2\n"})
    first = upload(small_stack, data)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert (body["size_bytes"], body["files"]) == (len(data), 2)
    again = upload(small_stack, data)
    assert again.status_code == 200 and again.json()["sha256"] == body["sha256"]
    assert small_stack.api("GET", f"/bundles/{body['sha256']}")["files"] == 2
    assert f"{body['sha256']}.tar" in leftovers(small_stack)


def test_a_bundle_belongs_to_its_uploader(small_stack: Stack) -> None:
    data = tar_bytes({"mine.py": b"pass\n"})
    sha = upload(small_stack, data).json()["sha256"]
    other = small_stack.api("POST", "/users", json={"name": f"m{free_port()}"})["token"]
    r = small_stack.api("GET", f"/bundles/{sha}", token=other, expect=404)
    assert r["code"] == "not_found" and r["field"] == "sha256"
    r = small_stack.api("POST", "/jobs", token=other, expect=422,
                        json={"kind": "command", "params": {"argv": ["python", "mine.py"], "bundle": sha}})
    assert r["code"] == "invalid_params" and r["field"] == "params.bundle"
    # Uploading the same content makes it theirs too.
    assert upload(small_stack, data, token=other).status_code == 201


def test_over_the_limit_is_413_naming_the_limit(small_stack: Stack) -> None:
    import os

    data = tar_bytes({"big.bin": os.urandom(2 * 2**20)}, gzip=False)
    r = upload(small_stack, data)
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "bundle_too_large" and "GPULAB_MAX_BUNDLE_MB=1" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: stopped while streaming
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    assert small_stack.http is not None
    r = small_stack.http.post("/bundles", content=chunks())
    assert r.status_code == 413 and "GPULAB_MAX_BUNDLE_MB=1" in r.json()["detail"]
    assert not [n for n in leftovers(small_stack) if n.startswith(".upload")]


@pytest.mark.parametrize(("files", "links", "says"), [
    ({"../escape.py": b"x"}, {}, "climbs out"),
    ({"/etc/cron.d/evil": b"x"}, {}, "absolute"),
    ({"ok.py": b"x"}, {"data": "/etc"}, "link pointing outside"),
    ({"ok.py": b"x"}, {"sub/up": "../../etc/passwd"}, "link pointing outside"),
])
def test_bad_entries_are_refused(small_stack: Stack, files: dict[str, bytes], links: dict[str, str],
                                 says: str) -> None:
    before = leftovers(small_stack)
    r = upload(small_stack, tar_bytes(files, links=links))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_bundle" and says in r.json()["detail"]
    # Nothing new: the upload's expiry (GPULAB_BUNDLE_KEEP_S=1) may have removed older bundles.
    assert set(leftovers(small_stack)) <= set(before)


def test_not_an_archive_is_refused(small_stack: Stack) -> None:
    r = upload(small_stack, b"this is not a tar archive at all" * 20)
    assert r.status_code == 422 and "not a tar archive" in r.json()["detail"]
    r = upload(small_stack, b"")
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    assert not [n for n in leftovers(small_stack) if n.startswith(".upload")]


def test_unused_bundles_expire(small_stack: Stack) -> None:
    old = upload(small_stack, tar_bytes({"old.py": b"1"})).json()["sha256"]
    # GPULAB_BUNDLE_KEEP_S=1: a later upload sweeps the unused one away.
    small_stack.wait(lambda: upload(small_stack, tar_bytes({"new.py": b"2"})).status_code in (200, 201)
                     and f"{old}.tar" not in leftovers(small_stack), 10, "the old bundle to expire")
    small_stack.api("GET", f"/bundles/{old}", expect=404)


@pytest.mark.parametrize("name", ["GPULAB_DATABASE_URL", "LD_PRELOAD", "CUDA_VISIBLE_DEVICES", "1BAD"])
def test_command_env_names_are_checked(small_stack: Stack, name: str) -> None:
    r = small_stack.api("POST", "/jobs", expect=422,
                        json={"kind": "command", "params": {"argv": ["true"], "env": {name: "x"}}})
    assert r["code"] == "invalid_params" and r["field"] == "params.env" and name in r["detail"]


def test_unknown_python_env_is_refused(small_stack: Stack) -> None:
    r = small_stack.api("POST", "/jobs", expect=422,
                        json={"kind": "command", "params": {"argv": ["true"], "python_env": "nope"}})
    assert r["field"] == "params.python_env" and "nope" in r["detail"]


def test_device_entries_are_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        info = tarfile.TarInfo("dev/sda")
        info.type = tarfile.BLKTYPE
        archive.addfile(info)
    path = tmp_path / "b.tar"
    path.write_bytes(buf.getvalue())
    with pytest.raises(InvalidBundle, match="device"):
        inspect(path, max_unpacked=2**20)


def test_unpack_keeps_links_inside_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "b.tar"
    path.write_bytes(tar_bytes({"data/x.csv": b"1,2\n", "train.py": b"pass\n"}, links={"latest.csv": "data/x.csv"}))
    dest = tmp_path / "work"
    dest.mkdir()
    assert unpack(path, dest, max_unpacked=2**20) == 2
    assert (dest / "latest.csv").read_text() == "1,2\n" and (dest / "latest.csv").is_symlink()


def test_a_bundle_a_waiting_job_needs_does_not_expire(db: Database) -> None:
    from datetime import timedelta

    from service.models import Bundle, Job, JobStatus, utcnow
    from service.store.bundles import expire_bundles, record_bundle
    from service.store.users import create_user

    sha = "ab" * 32
    with db.writing() as session:
        user, _ = create_user(session=session, name="keeper")
        bundle, _ = record_bundle(session=session, sha256=sha, owner_id=user.id, size_bytes=10, files=1,
                                  unpacked_bytes=10)
        session.get(Bundle, bundle.id).last_used_at = utcnow() - timedelta(days=30)  # type: ignore[union-attr]
        job = Job(owner_id=user.id, kind="command", params={"argv": ["true"], "bundle": sha}, device_request="cpu",
                  request_kind="cpu",
                  timeout_s=60, status=JobStatus.pending)
        session.add(job)
        session.commit()
        job_id = job.id
    with db.writing() as session:
        assert expire_bundles(session=session, keep_s=86400) == []
    with db.writing() as session:
        session.get(Job, job_id).status = JobStatus.succeeded  # type: ignore[union-attr]
        session.commit()
    with db.writing() as session:
        assert expire_bundles(session=session, keep_s=86400) == [sha]


def test_packing_honours_ignores_and_is_reproducible(tmp_path: Path) -> None:
    from cli.bundles import pack

    root = tmp_path / "proj"
    for rel, text in {"train.py": "x", "src/model.py": "m", "data/big.bin": "b", "data/keep.csv": "k",
                      "out/run1.pt": "w", "notes.tmp": "t", "src/.gitignore": "generated.py\n",
                      "src/generated.py": "g", ".gitignore": "*.tmp\nout/\n",
                      ".gpulabignore": "data/*\n!data/keep.csv\n",
                      ".git/HEAD": "ref", "__pycache__/a.pyc": "c", "env/pyvenv.cfg": "home=/usr",
                      "env/lib/site.py": "s"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "latest.csv").symlink_to("data/keep.csv")
    (root / "passwd").symlink_to("/etc/passwd")
    first = pack(root)
    with tarfile.open(first.path) as archive:
        names = sorted(m.name for m in archive.getmembers() if not m.isdir())
    assert names == [".gitignore", ".gpulabignore", "data/keep.csv", "latest.csv", "src/.gitignore", "src/model.py",
                     "train.py"]
    assert first.skipped == ["passwd (a link pointing outside the folder)"]
    second = pack(root)
    assert second.sha256 == first.sha256  # unchanged folder, same bundle: not uploaded twice
    (root / "train.py").write_text("y")
    assert pack(root).sha256 != first.sha256
    first.path.unlink()
    second.path.unlink()


def _old_bundle(db: Database, sha: str, name: str) -> tuple[int, int]:
    """A member's bundle row unused for 30 days; returns (user id, bundle id)."""
    from datetime import timedelta

    from service.models import Bundle, utcnow
    from service.store.bundles import record_bundle
    from service.store.users import create_user

    with db.writing() as session:
        user, _ = create_user(session=session, name=name)
        bundle, _ = record_bundle(session=session, sha256=sha, owner_id=user.id, size_bytes=10, files=1,
                                  unpacked_bytes=10)
        session.get(Bundle, bundle.id).last_used_at = utcnow() - timedelta(days=30)  # type: ignore[union-attr]
        session.commit()
        return user.id, bundle.id


def test_a_submit_that_uses_a_bundle_while_it_expires_keeps_it(db: Database) -> None:
    """The expiry's DELETE checks the age again once a concurrent submit's use is committed."""
    import threading

    from service.models import Bundle, User
    from service.store.bundles import expire_bundles, use_bundle

    sha = "cd" * 32
    user_id, bundle_id = _old_bundle(db, sha, "racer")
    expired: list[list[str]] = []
    with db.writing() as submit:
        use_bundle(session=submit, sha256=sha, user=submit.get(User, user_id))  # type: ignore[arg-type]
        submit.flush()  # the submit holds the row (PostgreSQL); SQLite's writer holds the database

        def expire() -> None:
            with db.writing() as session:
                expired.append(expire_bundles(session=session, keep_s=86400))

        expiry = threading.Thread(target=expire)
        expiry.start()
        expiry.join(1.0)
        assert expiry.is_alive(), "the expiry must wait for the submit's transaction"
        submit.commit()
    expiry.join(30)
    assert expired == [[]]
    with db.reading() as session:
        assert session.get(Bundle, bundle_id) is not None


def test_a_file_an_upload_recorded_again_survives_its_expiry(db: Database, tmp_path: Path) -> None:
    """Expiry committed, then the same content uploaded and recorded: retiring the file keeps it."""
    from sqlalchemy import delete

    from service.bundles import bundle_file, retire
    from service.models import Bundle
    from service.store.bundles import count_bundles, expire_bundles, record_bundle

    sha = "ef" * 32
    user_id, _ = _old_bundle(db, sha, "returner")
    root = tmp_path / "bundles"
    root.mkdir()
    path = bundle_file(root, sha)
    path.write_bytes(b"tar")
    with db.writing() as session:
        assert expire_bundles(session=session, keep_s=86400) == [sha]
    with db.writing() as session:  # the upload's row lands between the expiry's commit and its file step
        record_bundle(session=session, sha256=sha, owner_id=user_id, size_bytes=3, files=1, unpacked_bytes=3)

    def wanted() -> bool:
        with db.reading() as session:
            return count_bundles(session=session, sha256=sha) > 0

    assert retire(root, sha, wanted=wanted) is False
    assert path.read_bytes() == b"tar" and sorted(p.name for p in root.iterdir()) == [path.name]
    with db.writing() as session:
        session.execute(delete(Bundle))
        session.commit()
    assert retire(root, sha, wanted=wanted) is True
    assert list(root.iterdir()) == []
