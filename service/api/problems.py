"""One error path: every failure leaves the API as application/problem+json."""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.db import is_connection_lost
from service.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    GpulabError,
    HttpError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
)

log = logging.getLogger("gpulab.api")
PROBLEM = "application/problem+json"
# A problem body names the refused value; a long one is cut, so a 50 MB body never comes
# back as a 150 MB 422.
VALUE_CHARS = 200
VALUE_ITEMS = 10

# What each status means on any route, for the OpenAPI description of its problem response.
STATUS_MEANING = {
    400: "The request is malformed.",
    401: "No bearer token, or an unknown or revoked one.",
    403: "The member may not do this.",
    404: "No such resource.",
    405: "The path does not accept this method.",
    409: "The request conflicts with the resource's state.",
    413: "The body or upload is larger than the service accepts.",
    422: "A field or a job parameter was refused; `field` and `value` name it.",
    429: "A lab limit refused the request.",
    500: "A fault of gpulab itself; `error_id` is in the API's log.",
    503: "The database or Redis is down for a moment; retry after `Retry-After` seconds.",
}


# Any operation can answer these: 500 (a fault of gpulab's, with an error id in the log) and
# 503 (the database's connection lost, or Redis down), both problem+json.
ALWAYS_POSSIBLE = (500, 503)


class Problem(BaseModel):
    """An error, as RFC 9457 problem details; `type` links to the code's page under /problems."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["/problems/job_not_found"])
    title: str
    status: int
    code: str = Field(description="stable across releases: test this, not the detail text")
    detail: str = Field(description="one line: what was wrong and what to do")
    field: str | None = Field(None, description="the field or parameter that was refused")
    value: Any = Field(None, description="the value that was refused")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring these statuses as application/problem+json."""
    return {
        status: {
            "description": STATUS_MEANING.get(status, "An error."),
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def problem_response(exc: GpulabError, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if exc.status == 503:
        headers["Retry-After"] = str(getattr(exc, "retry_after", 5))
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="gpulab"'
    body = exc.problem()
    for key in ("value", "errors"):  # what the client sent: cut short, made JSON-safe
        if key in body:
            body[key] = _plain(body[key])
    return JSONResponse(body, status_code=exc.status, media_type=PROBLEM, headers=headers)


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for p in loc:
        if p in ("body", "query", "path", "header"):
            continue
        # An item of a list is named as a person writes it: jobs[3].priority, not jobs.3.priority.
        path += f"[{p}]" if isinstance(p, int) else f".{p}" if path else str(p)
    return path or "body"


def internal_error(exc: BaseException, what: str) -> JSONResponse:
    """A 500 whose id is logged with the traceback, so a member's report finds the cause."""
    error_id = uuid.uuid4().hex[:12]
    log.error("%s (error_id=%s)", what, error_id, exc_info=exc)
    return problem_response(InternalError(
        f"gpulab failed on this request; tell an admin the error id {error_id}", extra={"error_id": error_id}))


def install(app: FastAPI) -> None:
    @app.exception_handler(GpulabError)
    async def _domain(_: Request, exc: GpulabError) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_path(tuple(e["loc"])), "value": e.get("input"), "message": e["msg"]}
            for e in exc.errors()[:VALUE_ITEMS]
        ]
        first = errors[0] if errors else {"field": "body", "value": None, "message": "invalid"}
        shown = _plain(first["value"])
        err = InvalidRequest(
            f"{first['field']}: {first['message']} (got {_short(repr(shown))})",
            field=first["field"], value=shown, extra={"errors": errors},
        )
        return problem_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cls = {404: NotFound, 405: MethodNotAllowed}.get(exc.status_code, HttpError)
        err = cls(str(exc.detail))
        err.status = exc.status_code
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Allow lists every method the path takes: Starlette names only the first route's.
            headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
        return problem_response(err, headers=headers)

    @app.exception_handler(SQLAlchemyError)
    async def _database(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        # Only a lost connection is worth retrying; any other database error is a fault of
        # gpulab's (a bad query, a value the database refused) and a retry would fail again.
        if is_connection_lost(exc):
            log.warning("database unavailable: %s", _short(str(exc).splitlines()[0] if str(exc) else repr(exc)))
            return problem_response(DatabaseUnavailable("the database is unavailable; retry shortly"))
        return internal_error(exc, "database error")

    @app.exception_handler(redis.RedisError)
    async def _redis(_: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unavailable: %s", exc)
        return problem_response(BrokerUnavailable("Redis is unavailable; retry shortly"))

    @app.exception_handler(Exception)
    async def _anything(_: Request, exc: Exception) -> JSONResponse:
        return internal_error(exc, "unexpected error")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> set[str]:
    """The methods some route fully matches at this path (asked per method: routers nest)."""
    return {method for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                   for route in request.app.routes)}


def _short(text: str) -> str:
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + f"… ({len(text)} characters)"


def _plain(value: Any, depth: int = 0) -> Any:
    """Make a value JSON-safe and short for a problem body: strings cut, containers trimmed,
    text that UTF-8 cannot carry (a lone surrogate) escaped."""
    if isinstance(value, dict):
        if depth > 4:
            return "{…}"
        items = list(value.items())[:VALUE_ITEMS * 5]
        return {_plain(str(k), depth + 1): _plain(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        if depth > 4:
            return "[…]"
        return [_plain(v, depth + 1) for v in value[:VALUE_ITEMS]]
    if isinstance(value, bytes):
        value = value[: VALUE_CHARS * 4].decode("utf-8", "replace")
    if isinstance(value, str):
        return _short(value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00"))
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return f"an integer of {len(str(abs(value))) if abs(value) < 10**4000 else 'over 4000'} digits"
    if value is None or isinstance(value, bool | int | float):
        return value
    return _short(repr(value))
