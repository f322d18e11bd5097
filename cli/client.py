"""The CLI's HTTP client: one place that turns API problems into readable errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from service.settings import Settings

EXIT_OK = 0
EXIT_JOB_FAILED = 1  # the job ended failed or cancelled
EXIT_ERROR = 2  # the CLI was misused, or the service refused or could not be reached


class CliError(Exception):
    """An error to print and exit with EXIT_ERROR."""


def credentials_file(settings: Settings) -> Path:
    """Where `gpulab login` and `gpulab up` keep this machine user's token."""
    return settings.credentials_file.expanduser()


def save_token(settings: Settings, token: str) -> Path:
    path = credentials_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return path


def load_token(settings: Settings) -> str:
    if settings.token:
        return settings.token
    path = credentials_file(settings)
    if path.is_file():
        return path.read_text().strip()
    raise CliError(f"no token: set GPULAB_TOKEN or run `gpulab login TOKEN` (looked in {path})")


def describe_problem(response: httpx.Response) -> str:
    """A one-line message from a problem+json (or any error) response."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if isinstance(body, dict) and "code" in body:
        return f"{body['code']}: {body.get('detail', '')}"
    return f"HTTP {response.status_code}: {body}"


class Api:
    def __init__(self, settings: Settings, token: str | None = None, timeout: float = 30.0):
        self.base = settings.api_url.rstrip("/")
        self.token = token if token is not None else load_token(settings)
        self.http = httpx.Client(base_url=self.base, timeout=timeout,
                                 headers={"Authorization": f"Bearer {self.token}"})

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach gpulab at {self.base} ({exc}); is it running? (gpulab up)") from exc
        if response.status_code >= 400:
            raise CliError(describe_problem(response))
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def download(self, path: str, dest: Path) -> int:
        with self.http.stream("GET", path) as response:
            if response.status_code >= 400:
                response.read()
                raise CliError(describe_problem(response))
            size = 0
            with open(dest, "wb") as f:
                for chunk in response.iter_bytes():
                    f.write(chunk)
                    size += len(chunk)
        return size

    def stream_events(self, job_id: int, after: int) -> Iterator[dict[str, Any]]:
        """Server-Sent Events of a job after `after`, parsed; ends when the stream ends."""
        import json

        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
        with self.http.stream("GET", f"/jobs/{job_id}/events", headers=headers,
                              timeout=httpx.Timeout(10.0, read=60.0)) as response:
            if response.status_code >= 400:
                response.read()
                raise CliError(describe_problem(response))
            data: list[str] = []
            for line in response.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    yield json.loads("\n".join(data))
                    data = []
