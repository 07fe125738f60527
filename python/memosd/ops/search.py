"""SearchMemories: validation, the query embedding, the index lookups and access
counting of hits.

A search runs on the daemon's event loop, except for its query embedding: the loop
hands the query to the query queue (``memosd.query_encoder``), whose worker thread
embeds every query waiting in one forward pass (the weights are read once per batch)
without the GIL, and takes the vector back when the queue's descriptor turns
readable. The lookups take a fraction of a millisecond and run on the loop as well:
the filter and the lexical ranking while the worker embeds, the vector ranking and the
fusion once the vector is back. So the loop is the one Python thread on the search
path: a search never waits for the GIL behind another thread of the daemon, and
nothing is handed between threads but the query text and its vector.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from memosd.config import LimitsConfig
from memosd.errors import FailedPreconditionError, InvalidArgumentError, ResourceExhaustedError
from memosd.ops import validate
from memosd.ops.access import AccessTracker
from memosd.query_encoder import QueryQueue, query_queue
from memosd.search import SearchEngine, SearchFilter, SearchQuery
from memosd.search.engine import Hits

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 10


class Search:
    def __init__(
        self,
        engine: SearchEngine,
        access: AccessTracker,
        limits: LimitsConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._access = access
        self._limits = limits
        self._clock = clock
        self._queue: QueryQueue | None = None  # started by the first search on the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # _queue, _loop, _closed
        self._closed = False
        self._pending = 0  # searches on the loop waiting for their query vector

    async def search(
        self,
        cube_ids: Sequence[str],
        query: str,
        top_k: int,
        mode: str,
        flt: SearchFilter,
    ) -> Hits:
        """The hits of a search, best first; called on the event loop."""
        request = self._request(cube_ids, query, top_k, mode, flt)
        self._engine.require_cubes(request.cube_ids)  # before any embedding
        if request.mode == "LEXICAL":
            return self._counted(self._engine.search_embedded(request, None))
        limit = self._limits.max_pending_searches
        if limit and self._pending >= limit:
            # Past this, queued queries would only wait longer than any caller would:
            # refuse at once so that clients back off instead of timing out.
            raise ResourceExhaustedError(
                f"{self._pending} searches are waiting for their query embedding "
                "(limits.max_pending_searches); retry later"
            )
        self._pending += 1  # only the event loop counts: no lock
        try:
            vector = await self._submit(request.query)
            try:
                plan = self._engine.plan(request)  # while the worker embeds the query
            except BaseException:
                vector.cancel()
                raise
            embedded = await vector
        finally:
            self._pending -= 1
        return self._counted(self._engine.finish(plan, embedded))

    def search_blocking(
        self,
        cube_ids: Sequence[str],
        query: str,
        top_k: int,
        mode: str,
        flt: SearchFilter,
    ) -> Hits:
        """The same search from a worker thread (GenerateService's retrieval); its query
        is embedded on this thread."""
        request = self._request(cube_ids, query, top_k, mode, flt)
        return self._counted(self._engine.search(request))

    def close(self) -> None:
        """Refuse new searches; let the queue finish what it holds, then stop it."""
        with self._lock:
            self._closed = True
            queue, loop = self._queue, self._loop
        if queue is None:
            return
        queue.close()
        if loop is not None and not loop.is_closed():
            # (RuntimeError: the loop closed meanwhile; its selector went with it.)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._detach, loop, queue)

    @classmethod
    def _detach(cls, loop: asyncio.AbstractEventLoop, queue: QueryQueue) -> None:
        cls._deliver(queue)  # what the queue finished while closing
        loop.remove_reader(queue)

    def _request(
        self, cube_ids: Sequence[str], query: str, top_k: int, mode: str, flt: SearchFilter
    ) -> SearchQuery:
        """The validated query; refused once closed."""
        self._refuse_if_closed()
        for i, cube_id in enumerate(cube_ids):
            validate.identifier(f"cube_ids[{i}]", cube_id)
        if top_k > self._limits.max_top_k:
            raise InvalidArgumentError("top_k", f"must be at most {self._limits.max_top_k}")
        if len(query.encode()) > self._limits.max_query_bytes:
            raise InvalidArgumentError("query", f"longer than {self._limits.max_query_bytes} bytes")
        return SearchQuery(tuple(cube_ids), query, top_k or DEFAULT_TOP_K, mode, flt)

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise FailedPreconditionError("the daemon is shutting down")

    async def _submit(self, text: str) -> asyncio.Future[np.ndarray]:
        """The future of ``text``'s vector, queued for the embedding worker."""
        loop = asyncio.get_running_loop()
        queue = self._queue if self._loop is loop and self._queue else await self._start(loop)
        vector: asyncio.Future[np.ndarray] = loop.create_future()
        try:
            queue.submit(vector, text)
        except ResourceExhaustedError:  # closed since the check
            raise FailedPreconditionError("the daemon is shutting down") from None
        return vector

    async def _start(self, loop: asyncio.AbstractEventLoop) -> QueryQueue:
        """The queue, started by the first search and watched by ``loop`` from then on
        (the model loads off the loop if the daemon did not preload it). A later event
        loop takes the queue over once the first one has closed."""
        while True:
            with self._lock:
                self._refuse_if_closed()
                if self._loop is loop and self._queue is not None:
                    return self._queue
                if self._loop is not None and self._queue is not None:
                    if not self._loop.is_closed():
                        raise FailedPreconditionError("searches run on one event loop")
                    self._loop = loop
                    loop.add_reader(self._queue, self._deliver, self._queue)
                    return self._queue
            queue = await asyncio.to_thread(query_queue, self._engine.embedder)
            with self._lock:
                if not self._closed and self._loop is None:
                    self._queue, self._loop = queue, loop
                    loop.add_reader(queue, self._deliver, queue)
                    return queue
            queue.close()  # closed meanwhile, or a concurrent first search started one

    @staticmethod
    def _deliver(queue: QueryQueue) -> None:
        for vector, result in queue.take():
            if vector.done():  # the call was cancelled meanwhile
                continue
            if isinstance(result, Exception):
                vector.set_exception(result)
            else:
                vector.set_result(result)

    def _counted(self, hits: Hits) -> Hits:
        """``hits``, once their accesses are recorded."""
        self._access.record((rec.key for rec, _ in hits), self._clock())
        return hits
