"""The CLI's HTTP client: one place that turns API problems into readable errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from cli.errors import EXIT_FAILURE, EXIT_OK, CliError, UsageError
from service.settings import Settings

__all__ = ["EXIT_JOB_FAILED", "EXIT_OK", "Api", "CliError", "UsageError", "load_token", "save_token"]

EXIT_JOB_FAILED = EXIT_FAILURE  # the job ended failed or cancelled
# Problems that say the command line asked for something impossible: a usage error (exit 2).
USAGE_CODES = {"invalid_params", "unknown_kind", "invalid_request", "unknown_device", "kind_disabled"}


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
    raise CliError(f"no token: run `gpulab login TOKEN` or set GPULAB_TOKEN (looked in {path})")


def problem_error(response: httpx.Response) -> CliError:
    """A one-line error from a problem+json (or any error) response, with what to do."""
    try:
        body = response.json()
    except ValueError:
        return CliError(f"HTTP {response.status_code} from gpulab: {response.text[:200]}")
    if not (isinstance(body, dict) and "code" in body):
        return CliError(f"HTTP {response.status_code} from gpulab: {body}")
    code, detail = body["code"], body.get("detail", "")
    if code == "unauthorized":
        return CliError(f"{code}: {detail}: run `gpulab login TOKEN` with a valid token")
    if code in USAGE_CODES:
        hint = {"unknown_kind": " (`gpulab kinds` lists them)",
                "invalid_params": " (`gpulab kinds` shows each kind's parameters)",
                "unknown_device": " (`gpulab devices` lists them)"}.get(code, "")
        return UsageError(f"{code}: {detail}{hint}")
    if response.status_code == 503:
        return CliError(f"{code}: {detail} (retry in {response.headers.get('Retry-After', 'a few')} s)")
    return CliError(f"{code}: {detail}")


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
            raise CliError(f"cannot reach gpulab at {self.base} ({exc}): start it with `gpulab up`, "
                           f"or set GPULAB_API_URL") from exc
        if response.status_code >= 400:
            raise problem_error(response)
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
                raise problem_error(response)
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
                raise problem_error(response)
            data: list[str] = []
            for line in response.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    yield json.loads("\n".join(data))
                    data = []
