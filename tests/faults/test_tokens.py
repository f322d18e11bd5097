"""Tokens: never in URLs or logs, never echoed, revoked ones end open streams; stream tickets.

Before: `?token=` worked on every route and uvicorn's access log kept it (admin tokens sat in
the log); an open SSE stream of a revoked token kept delivering; the 401 body echoed part of
the Authorization header and no 401 carried WWW-Authenticate.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.faults.conftest import add_member, bearer
from tests.support.stack import Stack

SSE = {"Accept": "text/event-stream"}


def unauthorized(r: httpx.Response) -> dict:
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["www-authenticate"].lower().startswith("bearer")
    return r.json()


def test_a_token_in_the_url_is_refused(stack: Stack) -> None:
    for path in ("/jobs", "/me", "/jobs/1/events"):
        unauthorized(httpx.get(f"{stack.url}{path}", params={"token": stack.token}, headers=SSE))


@pytest.mark.parametrize("header", ["Bearer glab_SECRETsecret0123456789", "Basic c2VjcmV0OnBhc3N3b3Jk",
                                    "glab_SECRETsecret0123456789", "Token SECRETsecret0123456789"])
def test_the_401_never_echoes_the_header(stack: Stack, header: str) -> None:
    r = httpx.get(f"{stack.url}/jobs", headers={"Authorization": header})
    unauthorized(r)
    secret = header.split(" ", 1)[-1].strip()
    for piece in (secret[i:i + 5] for i in range(0, max(len(secret) - 4, 0))):
        assert piece not in r.text, (piece, r.text)


def _follow(url: str, headers: dict[str, str], seen: dict[str, Any]) -> None:
    """Read an SSE stream to its end, noting event names and when it ended."""
    seen["events"] = []
    try:
        with httpx.stream("GET", url, headers={**SSE, **headers}, timeout=60) as r:
            seen["status"] = r.status_code
            for line in r.iter_lines():
                if line.startswith("event: "):
                    seen["events"].append(line[7:])
                    seen.setdefault("first_event_at", time.monotonic())
    except httpx.HTTPError as exc:
        seen["error"] = repr(exc)
    seen["ended_at"] = time.monotonic()


def _open(url: str, headers: dict[str, str]) -> tuple[threading.Thread, dict[str, Any]]:
    seen: dict[str, Any] = {}
    thread = threading.Thread(target=_follow, args=(url, headers, seen), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while "first_event_at" not in seen and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "first_event_at" in seen, seen
    return thread, seen


def test_tickets_open_one_stream_of_one_job(stack: Stack) -> None:
    _, token = add_member(stack, "ticketed")
    job = stack.submit("test-sleep", {"seconds": 60}, token=token)
    other = stack.submit("test-echo", {"lines": 0}, token=token)
    try:
        unauthorized(httpx.post(f"{stack.url}/jobs/{job['id']}/events/tickets"))
        issued = stack.api("POST", f"/jobs/{job['id']}/events/tickets", token=token)
        assert issued["url"].startswith(f"/jobs/{job['id']}/events?ticket=") and issued["expires_in_s"] <= 60
        # For another job the ticket opens nothing (and is used up).
        unauthorized(httpx.get(f"{stack.url}/jobs/{other['id']}/events", params={"ticket": issued["ticket"]},
                               headers=SSE))
        unauthorized(httpx.get(f"{stack.url}{issued['url']}", headers=SSE))
        ticket = stack.api("POST", f"/jobs/{job['id']}/events/tickets", token=token)
        thread, seen = _open(f"{stack.url}{ticket['url']}", {})
        assert seen["status"] == 200 and "status" in seen["events"]
        # Single use: the same URL again is refused, while the first stream still runs.
        unauthorized(httpx.get(f"{stack.url}{ticket['url']}", headers=SSE))
        unauthorized(httpx.get(f"{stack.url}/jobs/{job['id']}/events", params={"ticket": "glst_made_up"},
                               headers=SSE))
        assert thread.is_alive()
    finally:
        stack.api("POST", f"/jobs/{job['id']}/cancel", token=token)
    thread.join(30)
    assert not thread.is_alive()


@pytest.mark.parametrize("opened_with", ["bearer", "ticket"])
def test_revoking_a_token_ends_its_open_streams(stack: Stack, opened_with: str) -> None:
    name, token = add_member(stack, f"revoked{opened_with}")
    job = stack.submit("test-sleep", {"seconds": 60}, token=token)
    try:
        if opened_with == "ticket":
            url = stack.url + stack.api("POST", f"/jobs/{job['id']}/events/tickets", token=token)["url"]
            thread, seen = _open(url, {})
        else:
            thread, seen = _open(f"{stack.url}/jobs/{job['id']}/events", bearer(token))
        time.sleep(0.5)  # the stream is past its first checks, as a long-open one would be
        assert thread.is_alive()
        revoked_at = time.monotonic()
        stack.gpulab("users", "revoke", name)
        thread.join(15)
        assert not thread.is_alive(), "the stream of a revoked token is still open after 15 s"
        assert seen["ended_at"] - revoked_at < 10, seen["ended_at"] - revoked_at
        assert seen["events"][-1] == "revoked", seen["events"]
        unauthorized(httpx.get(f"{stack.url}/me", headers=bearer(token)))
    finally:
        stack.api("POST", f"/jobs/{job['id']}/cancel")


def test_no_credential_reaches_the_log(stack: Stack) -> None:
    _, token = add_member(stack, "logged")
    job = stack.submit("test-echo", {"lines": 1}, token=token)
    stack.wait_for(job["id"])
    ticket = stack.api("POST", f"/jobs/{job['id']}/events/tickets", token=token)["ticket"]
    assert httpx.get(f"{stack.url}/jobs/{job['id']}/events", params={"ticket": ticket}, headers=SSE).status_code \
        == 200
    httpx.get(f"{stack.url}/jobs", params={"token": token})  # refused, and still not logged
    httpx.get(f"{stack.url}/jobs", headers={"Authorization": f"Bearer {token}x"})
    log = stack.logs / "api.log"

    def logged() -> bool:  # the access log line of the ticket request is written
        return "ticket=[redacted]" in log.read_text(errors="replace")

    stack.wait(logged, 10, "the access log to show the redacted ticket")
    text_ = log.read_text(errors="replace")
    for secret in (token, token[5:20], ticket, ticket[5:20], stack.token, stack.token[5:20]):
        assert secret not in text_
    assert "token=[redacted]" in text_


def test_tokens_are_stored_hashed(stack: Stack) -> None:
    _, token = add_member(stack, "hashed")
    engine = create_engine(stack.env["GPULAB_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = [tuple(str(v) for v in row) for row in conn.execute(text("SELECT * FROM tokens"))]
    finally:
        engine.dispose()
    assert rows
    assert not any(token in value or token[5:] in value for row in rows for value in row)
