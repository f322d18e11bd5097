"""How the CLI fails: one line saying what is wrong and what to do, and an exit code.

Exit codes follow the Unix convention: 0 success, 1 a failure (the service refused, a job
failed, something could not be reached), 2 a usage error (a bad option or parameter).
A traceback is printed only with `gpulab --debug`.
"""

from __future__ import annotations

import re
from typing import Any

from service.settings import safe_url

EXIT_OK = 0
EXIT_FAILURE = 1  # the job failed or was cancelled, or the service refused or could not be reached
EXIT_USAGE = 2  # the command line was wrong: an option, a parameter, a kind name


class CliError(Exception):
    """A failure to print as one line and exit with `exit_code`."""

    exit_code = EXIT_FAILURE


class UsageError(CliError):
    """The command line itself was wrong (exit 2)."""

    exit_code = EXIT_USAGE


def describe_validation(exc: Any, prefix: str = "") -> str:
    """A pydantic ValidationError as one line: each field, what is wrong, the value given."""
    parts = []
    for e in exc.errors():
        field = ".".join(str(p) for p in e.get("loc", ())) or "params"
        given = "" if e.get("type") == "missing" else f" (got {e.get('input')!r})"
        parts.append(f"{prefix}{field}: {e.get('msg', 'invalid')}{given}")
    return "; ".join(parts)


def one_line(exc: BaseException, *, database_url: str = "", redis_url: str = "") -> tuple[str, int]:
    """The message and exit code for an exception no command handled itself."""
    import pydantic
    import redis
    import sqlalchemy.exc

    from jobs.base import JobError
    from jobs.registry import UnknownKind
    from service.errors import GpulabError

    if isinstance(exc, CliError):
        return str(exc), exc.exit_code
    if isinstance(exc, pydantic.ValidationError):
        return f"invalid parameters: {describe_validation(exc)}", EXIT_USAGE
    if isinstance(exc, UnknownKind):
        return f"no job kind is called {exc.args[0]!r}: `gpulab kinds` lists them", EXIT_USAGE
    if isinstance(exc, JobError):
        return f"the job failed: {exc}", EXIT_FAILURE
    if isinstance(exc, GpulabError):
        return f"{exc.code}: {exc.detail}", EXIT_FAILURE
    if isinstance(exc, sqlalchemy.exc.DBAPIError | sqlalchemy.exc.OperationalError):
        text = str(exc.orig if getattr(exc, "orig", None) is not None else exc)
        where = safe_url(database_url) or "GPULAB_DATABASE_URL"
        if re.search(r"no such table|relation \S+ does not exist|UndefinedTable", text, re.IGNORECASE):
            return no_database(f"the database at {where} has no gpulab tables"), EXIT_FAILURE
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return (f"cannot use the database at {where} ({first}): check GPULAB_DATABASE_URL "
                f"and that the database server runs", EXIT_FAILURE)
    if isinstance(exc, redis.RedisError):
        return (f"cannot reach Redis at {safe_url(redis_url) or 'GPULAB_REDIS_URL'} ({exc}): start redis-server "
                f"or set GPULAB_REDIS_URL", EXIT_FAILURE)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", EXIT_FAILURE
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (f"{type(exc).__name__}{': ' + first if first else ''} "
            f"(an unexpected error: run with --debug for the traceback)", EXIT_FAILURE)


def no_database(what: str) -> str:
    """What to do when the database an admin command opened is not gpulab's."""
    return (f"{what}: run `gpulab migrate` for a new installation; for a running gpulab's, run this as the "
            "account that started it (or set GPULAB_DATABASE_URL)")
