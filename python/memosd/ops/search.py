"""SearchMemories: validation, the search engine, and access counting of hits.

Searches run in two stages, each on its own thread:
- the embed stage takes every query waiting when it becomes free and embeds them
  together, in one forward pass of the embedder (which reads its weights once per
  batch instead of once per query);
- the search stage takes each embedded batch and runs its index lookups, one
  query after another, and completes the callers' futures.
The forward pass runs natively without the GIL, so while one batch is embedded
the previous one is searched (and the event loop serves gRPC) on the other core.
One thread per stage also keeps the searches from contending with each other
for the GIL and the engine's lock; a lone query goes through at once.
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
from memosd.search.engine import Hits, QueryVector

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 10
# Queries served together at most; more wait for the next batch.
MAX_BATCH = 32

Vectors = list[QueryVector]  # per query, from SearchEngine.embed_queries
Embedded = tuple[list[tuple[Future[Hits], SearchQuery]], Vectors]


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
        self._embedded: deque[Embedded | None] = deque()  # None: no more batches
        self._ready = threading.Condition()
        self._closed = False
        self._stages = [
            threading.Thread(target=self._embed_stage, name="memosd-embed", daemon=True),
            threading.Thread(target=self._search_stage, name="memosd-search", daemon=True),
        ]
        for stage in self._stages:
            stage.start()

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

    def close(self) -> None:
        """Serve what is queued, then stop both stages."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        for stage in self._stages:
            stage.join()

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

    def _embed_stage(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._closed:
                    self._wake.wait()
                batch = [self._waiting.popleft() for _ in range(min(MAX_BATCH, len(self._waiting)))]
            if not batch:  # closed and drained
                self._hand_on(None)
                return
            live = [(f, q) for f, q in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                vectors = self._engine.embed_queries([q for _, q in live])
            except Exception as e:  # the embedder failed: every query of the batch fails
                log.exception("embedding a search batch of %d failed", len(live))
                for future, _ in live:
                    future.set_exception(e)
                continue
            self._hand_on((live, vectors))

    def _hand_on(self, embedded: Embedded | None) -> None:
        with self._ready:
            self._embedded.append(embedded)
            self._ready.notify()

    def _search_stage(self) -> None:
        while True:
            with self._ready:
                while not self._embedded:
                    self._ready.wait()
                embedded = self._embedded.popleft()
            if embedded is None:
                return
            self._search(*embedded)

    def _search(self, batch: list[tuple[Future[Hits], SearchQuery]], vectors: Vectors) -> None:
        results = self._engine.search_embedded([q for _, q in batch], vectors)
        now = self._clock()
        self._access.record(
            (rec.key for r in results if not isinstance(r, Exception) for rec, _ in r), now
        )
        for (future, _), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
