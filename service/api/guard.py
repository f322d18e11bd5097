"""The request guard: what no route should ever see, refused before routing as problem+json.

- A body over the size limit → 413 (a 50 MB body once came back as a 150–225 MB 422, and
  four at once took the API to 1.9 GB).
- JSON that Python parses but nothing downstream can store or send back → 422 naming the
  field: NaN and ±Infinity (JSON has neither), integers beyond 64 bits, NUL characters
  (PostgreSQL refuses \\u0000 in text), lone surrogates (not UTF-8), nesting deeper than
  MAX_DEPTH (recursion in validators and encoders).
- A NUL in the path or in a query parameter → 422 naming it.

Upload routes that stream a body to disk (with their own limit) are listed in STREAMED_PREFIXES.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import problem_response
from service.errors import GpulabError, InvalidRequest, PayloadTooLarge

MAX_BODY_BYTES = 1 << 20
MAX_DEPTH = 32
INT64 = 2**63
STREAMED_PREFIXES: tuple[str, ...] = ("/bundles",)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _NotJson:
    """Stands in for a number JSON has no room for, so the walk can name where it was."""

    def __init__(self, text: str):
        self.text = text


def _parse_float(text: str) -> float | _NotJson:
    value = float(text)
    return value if value not in (float("inf"), float("-inf")) else _NotJson(text)


def _parse_int(text: str) -> int | _NotJson:
    if len(text) > 20:
        return _NotJson(text[:24] + "…")
    value = int(text)
    return value if -INT64 <= value < INT64 else _NotJson(text)


def _preview(text: str) -> str:
    return text[:60].encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def _string_problem(text: str, field: str) -> GpulabError | None:
    if "\x00" in text:
        return InvalidRequest(f"{field}: text may not contain a NUL character (\\u0000)",
                              field=field, value=_preview(text))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return InvalidRequest(f"{field}: text contains a lone surrogate (\\ud800-\\udfff), which is not UTF-8",
                              field=field, value=_preview(text))
    return None


def json_problem(body: bytes) -> GpulabError | None:
    """Why a JSON body cannot be accepted, naming the field; None when it can (or when it is not
    JSON at all: FastAPI reports that)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InvalidRequest(f"body: not UTF-8 (byte {exc.start})", field="body", value=None)
    try:
        data = json.loads(body, parse_constant=_NotJson, parse_float=_parse_float, parse_int=_parse_int)
    except RecursionError:
        return InvalidRequest(f"body: JSON nested deeper than {MAX_DEPTH} levels", field="body", value=None)
    except ValueError:
        return None
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        field = path or "body"
        if depth > MAX_DEPTH:
            return InvalidRequest(f"{field}: JSON nested deeper than {MAX_DEPTH} levels",
                                  field=field.split(".")[0], value=None)
        if isinstance(value, _NotJson):
            return InvalidRequest(f"{field}: {value.text} is not a number gpulab can store "
                                  "(no NaN or Infinity; integers within 64 bits)", field=field, value=value.text)
        if isinstance(value, str):
            problem = _string_problem(value, field)
            if problem:
                return problem
        elif isinstance(value, dict):
            for key, item in value.items():
                problem = _string_problem(key, f"{field} (a key)")
                if problem:
                    return problem
                stack.append((item, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]" if path else f"[{i}]", depth + 1) for i, item in enumerate(value))
    return None


def url_problem(scope: Scope) -> GpulabError | None:
    """A NUL in the path or a query parameter (PostgreSQL would refuse it as text)."""
    if "\x00" in scope.get("path", ""):
        return InvalidRequest("path: may not contain a NUL character (%00)", field="path",
                              value=_preview(scope["path"]))
    query = scope.get("query_string", b"").decode("latin-1")
    if "%00" in query or "\x00" in query:
        for key, value in parse_qsl(query, keep_blank_values=True):
            for text in (key, value):
                if "\x00" in text:
                    return InvalidRequest(f"{_preview(key)}: may not contain a NUL character (%00)",
                                          field=_preview(key), value=_preview(value))
    return None


class RequestGuard:
    """ASGI middleware: refuses what routes must never see (see the module's docstring)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = url_problem(scope)
        if problem is None and not scope["path"].startswith(STREAMED_PREFIXES):
            problem = self._declared_size_problem(Headers(scope=scope))
        if problem is not None:
            await problem_response(problem)(scope, receive, send)
            return
        if scope["method"] not in _BODY_METHODS or scope["path"].startswith(STREAMED_PREFIXES):
            await self.app(scope, receive, send)
            return
        body, problem = await self._read_body(receive)
        if problem is None and body and "json" in Headers(scope=scope).get("content-type", "json"):
            problem = json_problem(body)
        if problem is not None:
            await problem_response(problem)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _declared_size_problem(self, headers: Headers) -> GpulabError | None:
        declared = headers.get("content-length")
        if declared is None:
            return None
        if not declared.isdigit():
            return InvalidRequest("Content-Length must be a number of bytes", field="Content-Length",
                                  value=_preview(declared))
        if int(declared) > self.max_body_bytes:
            return self._too_large(int(declared))
        return None

    def _too_large(self, size: int | None) -> PayloadTooLarge:
        said = f"{size} bytes" if size is not None else "more"
        return PayloadTooLarge(f"the body is {said}; this API accepts at most {self.max_body_bytes} bytes",
                               field="body", value=size, extra={"limit_bytes": self.max_body_bytes})

    async def _read_body(self, receive: Receive) -> tuple[bytes, GpulabError | None]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"", None  # the client left; the app sees an empty body and answers no one
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", self._too_large(None)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then the client's later messages."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
