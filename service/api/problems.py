"""One error path: every failure leaves the API as application/problem+json."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    GpulabError,
    HttpError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
)

log = logging.getLogger("gpulab.api")
PROBLEM = "application/problem+json"

# What each status means on any route, for the OpenAPI description of its problem response.
STATUS_MEANING = {
    400: "The request is malformed.",
    401: "No bearer token, or an unknown or revoked one.",
    403: "The member may not do this.",
    404: "No such resource.",
    405: "The path does not accept this method.",
    409: "The request conflicts with the resource's state.",
    413: "The upload is larger than the service accepts.",
    422: "A field or a job parameter was refused; `field` and `value` name it.",
    429: "A lab limit refused the request.",
    503: "The database or Redis is down for a moment; retry after `Retry-After` seconds.",
}


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


def problem_response(exc: GpulabError) -> JSONResponse:
    headers = {}
    if exc.status == 503:
        headers["Retry-After"] = str(getattr(exc, "retry_after", 5))
    return JSONResponse(exc.problem(), status_code=exc.status, media_type=PROBLEM, headers=headers)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(GpulabError)
    async def _domain(_: Request, exc: GpulabError) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_path(tuple(e["loc"])), "value": e.get("input"), "message": e["msg"]}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "value": None, "message": "invalid"}
        err = InvalidRequest(
            f"{first['field']}: {first['message']} (got {first['value']!r})",
            field=first["field"], value=_plain(first["value"]), extra={"errors": _plain(errors)},
        )
        return problem_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        cls = {404: NotFound, 405: MethodNotAllowed}.get(exc.status_code, HttpError)
        err = cls(str(exc.detail))
        err.status = exc.status_code
        response = problem_response(err)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return problem_response(DatabaseUnavailable("the database is unavailable; retry shortly"))

    @app.exception_handler(redis.RedisError)
    async def _redis(_: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unavailable: %s", exc)
        return problem_response(BrokerUnavailable("Redis is unavailable; retry shortly"))


def _plain(value: Any) -> Any:
    """Make a value JSON-safe for a problem body."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
