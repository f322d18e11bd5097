"""Domain errors: each has a stable `code` and an HTTP status, rendered as problem+json."""

from __future__ import annotations

from typing import Any


class GpulabError(Exception):
    """Base of every error a member may see; `detail` names the field and the value."""

    code = "error"
    status = 400
    # What a member should do about it: shown on the error's /problems/{code} page.
    help = "Read the detail: it names the field and the value that were refused."

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
            # A relative reference: it resolves against the API that sent it, whose
            # /problems/{code} page says what the error means and what to do.
            "type": f"/problems/{self.code}",
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
    """The request carried no bearer token, or one that is unknown or revoked."""

    code, status = "unauthorized", 401
    help = (
        "Send `Authorization: Bearer <token>`; "
        "an admin prints a token with `gpulab users add NAME` (or a new one with `gpulab users token NAME`)."
    )


class Forbidden(GpulabError):
    """The token is valid, but its member may not do this (an admin-only route, or another member’s job)."""

    code, status = "forbidden", 403
    help = "Ask an admin, or act on your own jobs only."


class NotFound(GpulabError):
    """Nothing exists at this path or under this id."""

    code, status = "not_found", 404
    help = "Check the id or the path (`gpulab jobs` lists jobs, `/docs` lists routes)."


class MethodNotAllowed(GpulabError):
    """This path exists, but not with this HTTP method."""

    code, status = "method_not_allowed", 405
    help = "Use a method the path accepts: the `Allow` header lists them, and /docs shows each route."


class HttpError(GpulabError):
    """The HTTP layer refused the request before gpulab read it (its status says why)."""

    code = "http_error"
    help = "Read the detail and the status; /docs shows what each route accepts."


class JobNotFound(NotFound):
    """No job has this id."""

    code = "job_not_found"
    help = "List jobs with `gpulab jobs` or `GET /jobs` and use an id from there."


class UnknownKind(GpulabError):
    """The job kind is not registered on this service."""

    code, status = "unknown_kind", 422
    help = "Pick one of the kinds in `known` (`GET /job-kinds`, `gpulab kinds`)."


class InvalidParams(GpulabError):
    """A job parameter is unknown, of the wrong type or out of range for the kind's `Params`."""

    code, status = "invalid_params", 422
    help = (
        "Fix the parameter named in `field`; "
        "the kind's JSON Schema (`GET /job-kinds`) lists every parameter with its bounds."
    )


class InvalidRequest(GpulabError):
    """A field of the request itself (not a job parameter) is missing, of the wrong type or out of range."""

    code, status = "invalid_request", 422
    help = "Fix the field named in `field`; `errors` lists every refused field, and /docs shows the request schema."


class UnknownDevice(GpulabError):
    """The device request matches no device that has registered (or could ever fit the job)."""

    code, status = "unknown_device", 422
    help = (
        "Ask for `cpu`, `gpu`, `cuda:N` or `model=NAME` as `GET /devices` lists them; "
        "wait for a worker to register if none has."
    )


class KindDisabled(GpulabError):
    """The job kind exists but an admin has not enabled it on this service."""

    code, status = "kind_disabled", 403
    help = "Ask an admin to enable it, or use another kind."


class Conflict(GpulabError):
    """The request conflicts with the current state of the resource."""

    code, status = "conflict", 409
    help = "Read the resource again and retry if it still applies."


class IdempotencyConflict(Conflict):
    """This Idempotency-Key was already used for a different request."""

    code = "idempotency_conflict"
    help = "Use a new key for a new request; reuse a key only to retry the very same request."


class JobFinished(Conflict):
    """The job has already ended, so it cannot be cancelled or changed."""

    code = "job_finished"
    help = "Nothing to do: read its outcome with `GET /jobs/{id}`."


class PayloadTooLarge(GpulabError):
    """The request's body is larger than the API accepts (uploads have their own limits)."""

    code, status = "payload_too_large", 413
    help = "Send a smaller body: `limit_bytes` says how large it may be."


class LimitExceeded(GpulabError):
    """A lab limit refused the request: the member already has the most pending jobs allowed."""

    code, status = "limit_exceeded", 429
    help = "Wait for some of your pending jobs to start, or cancel some; `limit` names the setting an admin can raise."


class Unavailable(GpulabError):
    """A service gpulab depends on is down for a moment."""

    code, status = "unavailable", 503
    help = "Retry after `Retry-After` seconds; if it lasts, tell an admin."
    retry_after = 5


class DatabaseUnavailable(Unavailable):
    """The database could not be reached or is busy."""

    code = "database_unavailable"
    help = "Retry after `Retry-After` seconds; if it lasts, an admin should check the database."


class BrokerUnavailable(Unavailable):
    """Redis (the broker and the live event channel) could not be reached."""

    code = "broker_unavailable"
    help = "Retry after `Retry-After` seconds; if it lasts, an admin should check Redis."


class InternalError(GpulabError):
    """A fault of gpulab itself: the body carries an id that the API's log carries too."""

    code, status = "internal_error", 500
    help = "Tell an admin the `error_id`: the API's log has the cause under that id."
