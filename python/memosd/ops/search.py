"""SearchMemories: validation, the search engine, and access counting of hits.

Searches run on one worker thread that takes every query waiting when it
becomes free and serves them together: one forward pass of the embedder for
the whole batch, then the index lookups one after another. Under concurrent
load this reads the embedder's weights once per batch instead of once per
query, and it keeps the searches from contending with each other for the GIL
and the engine's lock; a lone query goes through at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from memosd.config import LimitsConfig
from memosd.errors import FailedPreconditionError, InvalidArgumentError
from memosd.ops import validate
from memosd.ops.access import AccessTracker
from memosd.search import SearchEngine, SearchFilter, SearchQuery
from memosd.store import MemoryRecord

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 10
# Queries served together at most; more wait for the next batch.
MAX_BATCH = 32

Hits = list[tuple[MemoryRecord, float]]


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
        self._waiting: deque[tuple[Future[Hits], SearchQuery]] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name="memosd-search", daemon=True)
        self._worker.start()

    def submit(
        self,
        cube_ids: Sequence[str],
        query: str,
        top_k: int,
        mode: str,
        flt: SearchFilter,
    ) -> Future[Hits]:
        """Queue a search; the future holds its hits, best first, or its error."""
        future: Future[Hits] = Future()
        try:
            request = self._validate(cube_ids, query, top_k, mode, flt)
        except Exception as e:
            future.set_exception(e)
            return future
        with self._wake:
            if self._closed:
                future.set_exception(FailedPreconditionError("the daemon is shutting down"))
                return future
            self._waiting.append((future, request))
            self._wake.notify()
        return future

    def search(
        self,
        cube_ids: Sequence[str],
        query: str,
        top_k: int,
        mode: str,
        flt: SearchFilter,
    ) -> Hits:
        """``submit`` and wait for the result."""
        return self.submit(cube_ids, query, top_k, mode, flt).result()

    def close(self) -> None:
        """Serve what is queued, then stop the worker."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._worker.join()

    def _validate(
        self, cube_ids: Sequence[str], query: str, top_k: int, mode: str, flt: SearchFilter
    ) -> SearchQuery:
        for i, cube_id in enumerate(cube_ids):
            validate.identifier(f"cube_ids[{i}]", cube_id)
        if top_k > self._limits.max_top_k:
            raise InvalidArgumentError("top_k", f"must be at most {self._limits.max_top_k}")
        if len(query.encode()) > self._limits.max_query_bytes:
            raise InvalidArgumentError("query", f"longer than {self._limits.max_query_bytes} bytes")
        return SearchQuery(tuple(cube_ids), query, top_k or DEFAULT_TOP_K, mode, flt)

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._closed:
                    self._wake.wait()
                if not self._waiting:
                    return
                batch = [self._waiting.popleft() for _ in range(min(MAX_BATCH, len(self._waiting)))]
            live = [(f, q) for f, q in batch if f.set_running_or_notify_cancel()]
            if live:
                self._run(live)

    def _run(self, batch: list[tuple[Future[Hits], SearchQuery]]) -> None:
        try:
            results = self._engine.search_many([q for _, q in batch])
        except Exception as e:  # the embedder failed: every query of the batch fails
            log.exception("search batch of %d failed", len(batch))
            for future, _ in batch:
                future.set_exception(e)
            return
        now = self._clock()
        self._access.record(
            (rec.key for r in results if not isinstance(r, Exception) for rec, _ in r), now
        )
        for (future, _), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
