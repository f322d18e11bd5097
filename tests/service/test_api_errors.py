"""Every refusal of the API is problem+json with a stable code naming the field and the value."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.support.stack import Stack, free_port


def problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code and body["status"] == status
    return body


def post_job(stack: Stack, body: dict, token: str | None = None) -> httpx.Response:
    assert stack.http is not None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return stack.http.post("/jobs", json=body, headers=headers)


@pytest.fixture(scope="module")
def member(stack: Stack) -> str:
    name = f"member{free_port()}"
    return stack.api("POST", "/users", json={"name": name})["token"]


def test_unknown_kind(stack: Stack) -> None:
    body = problem(post_job(stack, {"kind": "warp-drive"}), 422, "unknown_kind")
    assert (body["field"], body["value"]) == ("kind", "warp-drive")
    assert "test-echo" in body["known"]


def test_unknown_param(stack: Stack) -> None:
    body = problem(post_job(stack, {"kind": "test-echo", "params": {"colour": "red"}}), 422, "invalid_params")
    assert (body["field"], body["value"]) == ("params.colour", "red")


def test_out_of_range_param(stack: Stack) -> None:
    body = problem(post_job(stack, {"kind": "test-echo", "params": {"lines": -5}}), 422, "invalid_params")
    assert (body["field"], body["value"]) == ("params.lines", -5)
    assert "-5" in body["detail"]


def test_wrong_type_in_the_request_itself(stack: Stack) -> None:
    body = problem(post_job(stack, {"kind": "test-echo", "priority": "high"}), 422, "invalid_request")
    assert (body["field"], body["value"]) == ("priority", "high")
    body = problem(post_job(stack, {"kind": "test-echo", "colour": 1}), 422, "invalid_request")
    assert body["field"] == "colour"


def test_unknown_device(stack: Stack) -> None:
    body = problem(post_job(stack, {"kind": "test-echo", "device": "elsewhere/cuda:7"}), 422, "unknown_device")
    assert (body["field"], body["value"]) == ("device", "elsewhere/cuda:7")
    assert "testhost/cpu" in [d["id"] for d in body["devices"]]
    body = problem(post_job(stack, {"kind": "test-echo", "device": "gpu"}), 422, "unknown_device")
    body = problem(post_job(stack, {"kind": "test-echo", "device": "tpu:0"}), 422, "invalid_request")
    assert body["field"] == "device"


def test_missing_and_bad_token(stack: Stack) -> None:
    r = httpx.get(f"{stack.url}/jobs")
    assert problem(r, 401, "unauthorized")["field"] == "Authorization"
    r = httpx.get(f"{stack.url}/jobs", headers={"Authorization": "Bearer glab_nope"})
    problem(r, 401, "unauthorized")


def test_members_change_only_their_own_jobs(stack: Stack, member: str) -> None:
    admins = stack.submit("test-sleep", {"seconds": 0.2})
    r = stack.http.post(f"/jobs/{admins['id']}/cancel", headers={"Authorization": f"Bearer {member}"})
    assert problem(r, 403, "forbidden")["value"] == admins["id"]
    mine = stack.submit("test-sleep", {"seconds": 30}, token=member)
    cancelled = stack.api("POST", f"/jobs/{mine['id']}/cancel", token=member)
    assert cancelled["cancelled_by"] != "admin"
    stack.wait_for(mine["id"])


def test_members_cannot_raise_priority_or_reach_admin_routes(stack: Stack, member: str) -> None:
    body = problem(post_job(stack, {"kind": "test-echo", "priority": 10}, token=member), 403, "forbidden")
    assert body["field"] == "priority"
    r = stack.http.get("/users", headers={"Authorization": f"Bearer {member}"})
    problem(r, 403, "forbidden")


def test_unknown_job_and_finished_job(stack: Stack) -> None:
    problem(stack.http.get("/jobs/999999"), 404, "job_not_found")
    job = stack.wait_for(stack.submit("test-echo")["id"])
    body = problem(stack.http.post(f"/jobs/{job['id']}/cancel"), 409, "job_finished")
    assert body["value"] == job["id"]


def test_unsafe_artifact_name(stack: Stack) -> None:
    job = stack.wait_for(stack.submit("test-echo")["id"])
    for name in (".env", "a..b", "~root"):
        body = problem(stack.http.get(f"/jobs/{job['id']}/artifacts/{name}"), 422, "invalid_request")
        assert (body["field"], body["value"]) == ("name", name)
    # An encoded slash never reaches a file: it matches no route at all.
    problem(stack.http.get(f"/jobs/{job['id']}/artifacts/..%2F..%2Fetc%2Fpasswd"), 404, "not_found")
    problem(stack.http.get(f"/jobs/{job['id']}/artifacts/missing.png"), 404, "not_found")


def test_idempotent_retry_returns_the_same_job(stack: Stack) -> None:
    body = {"kind": "test-echo", "params": {"message": "once"}}
    first = stack.http.post("/jobs", json=body, headers={"Idempotency-Key": "retry-1"})
    again = stack.http.post("/jobs", json=body, headers={"Idempotency-Key": "retry-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    body["params"]["message"] = "twice"
    problem(stack.http.post("/jobs", json=body, headers={"Idempotency-Key": "retry-1"}), 409, "idempotency_conflict")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def _api(tmp_path: Path, database_url: str, redis_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {"GPULAB_DATABASE_URL": database_url, "GPULAB_REDIS_URL": redis_url, "GPULAB_STATE_DIR": str(tmp_path),
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "api", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            import time

            time.sleep(0.1)
    return proc, url


def test_database_down_is_503_not_500(tmp_path: Path) -> None:
    proc, url = _api(tmp_path, f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nothing",
                     f"redis://127.0.0.1:{_closed_port()}/0")
    try:
        r = httpx.get(f"{url}/jobs", headers={"Authorization": "Bearer glab_x"}, timeout=30)
        body = problem(r, 503, "database_unavailable")
        assert r.headers["retry-after"]
        assert "database" in body["detail"]
        ready = httpx.get(f"{url}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unavailable")
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_down_keeps_submits_and_refuses_live_streams(tmp_path: Path) -> None:
    """The database is the record: a submit is accepted without Redis; live events need it."""
    from migrations.migrate import upgrade

    db_url = f"sqlite:///{tmp_path / 'gpulab.sqlite3'}"
    upgrade(db_url)
    env = {"GPULAB_DATABASE_URL": db_url, "GPULAB_STATE_DIR": str(tmp_path)}
    token = subprocess.run([sys.executable, "-m", "cli.main", "users", "add", "eve"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    from service.db import Database
    from service.settings import Settings
    from service.store.devices import register_worker

    db = Database.from_settings(Settings(database_url=db_url, state_dir=tmp_path))
    with db.writing() as s:
        register_worker(session=s, worker_id="w", device={"id": "h/cpu", "host": "h", "kind": "cpu"}, pid=1, slots=1)
    proc, url = _api(tmp_path, db_url, f"redis://127.0.0.1:{_closed_port()}/0")
    try:
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{url}/jobs", json={"kind": "test-echo"}, headers=auth, timeout=30)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        r = httpx.get(f"{url}/jobs/{job_id}/events", headers={**auth, "Accept": "text/event-stream"}, timeout=30)
        problem(r, 503, "broker_unavailable")
        assert httpx.get(f"{url}/jobs/{job_id}/events", headers=auth, timeout=30).json()["items"]
        ready = httpx.get(f"{url}/readyz", timeout=30).json()
        assert ready["checks"] == {"database": "ok", "redis": "unavailable: ConnectionError"}
    finally:
        proc.terminate()
        proc.wait(10)


def test_revoked_token_is_refused_within_the_token_cache_time(stack: Stack) -> None:
    """The API trusts a token lookup for GPULAB_TOKEN_CACHE_S (2 s): a token revoked by another
    process (the CLI) is refused by then, however often it is used meanwhile."""
    name = f"leaver{free_port()}"
    token = stack.api("POST", "/users", json={"name": name})["token"]
    assert stack.api("GET", "/me", token=token)["name"] == name
    out = stack.gpulab("users", "revoke", name).stdout
    revoked = time.monotonic()
    assert "revoked 1 token" in out
    while True:
        r = stack.http.get("/me", headers={"Authorization": f"Bearer {token}"})
        if r.status_code != 200 or time.monotonic() - revoked > Settings.model_fields["token_cache_s"].default + 1.0:
            break
        time.sleep(0.05)
    problem(r, 401, "unauthorized")
    assert name in stack.gpulab("users", "list").stdout


def test_a_database_error_that_is_not_a_lost_connection_is_a_500_with_an_id_in_the_log(tmp_path: Path) -> None:
    """A database that answers but refuses the query (here: never migrated, no tables) is a
    fault of gpulab's: 500 problem+json whose error_id is in the API's log, not a 503 retry."""
    port = free_port()
    log = tmp_path / "api.log"
    env = {"GPULAB_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
           "GPULAB_REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0", "GPULAB_STATE_DIR": str(tmp_path),
           "PATH": "/usr/bin:/bin"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "api", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        r = httpx.get(f"{url}/jobs", headers={"Authorization": "Bearer glab_x"}, timeout=30)
        body = problem(r, 500, "internal_error")
        assert "retry-after" not in r.headers
        error_id = body["error_id"]
        assert error_id in body["detail"]
        deadline = time.monotonic() + 10
        while error_id not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text(errors="replace")
        assert error_id in text and "no such table" in text
    finally:
        proc.terminate()
        proc.wait(10)
