"""One error path: every failure leaves the API as application/problem+json."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import BrokerUnavailable, DatabaseUnavailable, GpulabError, InvalidRequest

log = logging.getLogger("gpulab.api")
PROBLEM = "application/problem+json"


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
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        err = GpulabError(str(exc.detail))
        err.code, err.status = code, exc.status_code
        return problem_response(err)

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
