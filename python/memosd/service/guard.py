"""Runs an operation for a servicer: off the event loop, with errors mapped to statuses.

Operations are synchronous (LMDB, the embedder, the model); they run in the daemon's thread pool
so the event loop keeps serving. A memosd error becomes its status from the one
table in memosd.status; anything else is a bug: INTERNAL, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc

from memosd import status
from memosd.errors import InvalidArgumentError, MemosError

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


class Servicer:
    """Base of the servicers: holds the runtime and the pool operations run in."""

    def __init__(self, runtime: Any, executor: Executor) -> None:
        self.runtime = runtime
        self._executor = executor

    async def run(self, fn: Callable[..., Response], *args: Any, **kwargs: Any) -> Response:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))


async def abort_with(exc: Exception, context: grpc.aio.ServicerContext, name: str) -> None:
    """Ends the call with ``exc``'s status: a memosd error maps through the one table
    (InvalidArgumentError names its field in trailing metadata); anything else is a bug,
    INTERNAL, logged with its traceback. Always raises (grpc's AbortError)."""
    if isinstance(exc, MemosError):
        code = status.code_of(exc) or grpc.StatusCode.INTERNAL
        trailing: tuple[tuple[str, str], ...] = ()
        if isinstance(exc, InvalidArgumentError):
            trailing = ((status.FIELD_KEY, exc.field),)
        if code == grpc.StatusCode.INTERNAL:
            log.error("%s failed", name, exc_info=exc)
        await context.abort(code, str(exc), trailing_metadata=trailing)
    log.error("%s failed with an unexpected error", name, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the daemon log")


def rpc(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Decorate a servicer method: memosd errors become their status codes."""

    @functools.wraps(handler)
    async def guarded(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await handler(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await abort_with(exc, context, handler.__name__)
        raise AssertionError("unreachable: abort raises")

    return guarded
