"""Server-streaming RPCs: the streaming counterpart of ``guard.rpc``, and running a
synchronous iterator (model generation) in the operation thread pool."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc

from memosd.service.guard import Servicer, abort_with

Item = TypeVar("Item")
StreamHandler = Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
_END = object()


def stream_rpc(handler: StreamHandler) -> StreamHandler:
    """Decorate a streaming servicer method: memosd errors become their status codes."""

    @functools.wraps(handler)
    async def guarded(
        self: Any, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        try:
            async for response in handler(self, request, context):
                yield response
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await abort_with(exc, context, handler.__name__)

    return guarded


async def pumped(servicer: Servicer, iterator: Iterator[Item]) -> AsyncIterator[Item]:
    """Runs ``iterator`` to its end in one job of the servicer's thread pool and yields
    its items here as they come. The job ends on its own even when this consumer stops
    early: a cancelled generation notices at its next step (it polls for that)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()

    def put(item: Any, error: BaseException | None = None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, (item, error))

    def pump() -> None:
        try:
            for item in iterator:
                put(item)
        except BaseException as exc:
            put(_END, exc)
        else:
            put(_END)

    job = asyncio.ensure_future(servicer.run(pump))
    while True:
        item, error = await queue.get()
        if error is not None:
            raise error
        if item is _END:
            break
        yield item
    await job
