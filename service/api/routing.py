"""The API's route class: a sync handler runs in a thread, its answer is checked in the loop.

FastAPI runs a sync handler in a thread and then, in a second hop, validates what it
returned against the response model in a thread again. Handlers here return instances of
their response model, whose validation is an isinstance check (pydantic does not
revalidate instances), so the second hop bought nothing and cost 1–5 ms on a busy machine
(see docs/design.md, "A request hops to a thread once"). Wrapping the handler in a coroutine
that runs it in the thread pool makes FastAPI validate in the event loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from service.api.deps import end_reads


def in_thread(handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler` as a coroutine that runs it in the thread pool (FastAPI reads the signature
    and the annotations' module through __wrapped__)."""
    def handle(*args: Any, **kwargs: Any) -> Any:
        result = handler(*args, **kwargs)
        end_reads(kwargs.values())  # here, not in a hop of its own when the session closes
        return result

    @functools.wraps(handler)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(handle, *args, **kwargs)

    return run


class Route(APIRoute):
    """An APIRoute whose sync handler costs one thread hop, not two."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any):
        plain = not (inspect.iscoroutinefunction(endpoint) or inspect.isgeneratorfunction(endpoint)
                     or inspect.isasyncgenfunction(endpoint))
        super().__init__(path, in_thread(endpoint) if plain else endpoint, **kwargs)
