"""Domain errors: each has a stable `code` and an HTTP status, rendered as problem+json."""

from __future__ import annotations

from typing import Any


class GpulabError(Exception):
    """Base of every error a member may see; `detail` names the field and the value."""

    code = "error"
    status = 400

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        value: Any = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.value = value
        self.extra = extra or {}

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://gpulab.readthedocs.io/problems/{self.code}",
            "title": self.code.replace("_", " "),
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if self.field is not None:
            body["field"] = self.field
            body["value"] = self.value
        body.update(self.extra)
        return body


class Unauthorized(GpulabError):
    code, status = "unauthorized", 401


class Forbidden(GpulabError):
    code, status = "forbidden", 403


class NotFound(GpulabError):
    code, status = "not_found", 404


class JobNotFound(NotFound):
    code = "job_not_found"


class UnknownKind(GpulabError):
    code, status = "unknown_kind", 422


class InvalidParams(GpulabError):
    code, status = "invalid_params", 422


class InvalidRequest(GpulabError):
    code, status = "invalid_request", 422


class UnknownDevice(GpulabError):
    code, status = "unknown_device", 422


class KindDisabled(GpulabError):
    code, status = "kind_disabled", 403


class Conflict(GpulabError):
    code, status = "conflict", 409


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class JobFinished(Conflict):
    code = "job_finished"


class LimitExceeded(GpulabError):
    code, status = "limit_exceeded", 429


class Unavailable(GpulabError):
    """A backing service is down: the client may retry after `retry_after` seconds."""

    code, status = "unavailable", 503
    retry_after = 5


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"


class BrokerUnavailable(Unavailable):
    code = "broker_unavailable"
