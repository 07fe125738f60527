"""SearchMemories: validation, the search engine, and access counting of hits."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from memosd.config import LimitsConfig
from memosd.errors import InvalidArgumentError
from memosd.ops import validate
from memosd.ops.access import AccessTracker
from memosd.search import SearchEngine, SearchFilter, SearchQuery
from memosd.store import MemoryRecord

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

    def search(
        self,
        cube_ids: Sequence[str],
        query: str,
        top_k: int,
        mode: str,
        flt: SearchFilter,
    ) -> list[tuple[MemoryRecord, float]]:
        for i, cube_id in enumerate(cube_ids):
            validate.identifier(f"cube_ids[{i}]", cube_id)
        if top_k > self._limits.max_top_k:
            raise InvalidArgumentError("top_k", f"must be at most {self._limits.max_top_k}")
        if len(query.encode()) > self._limits.max_query_bytes:
            raise InvalidArgumentError("query", f"longer than {self._limits.max_query_bytes} bytes")
        # The engine refuses unknown cubes (NOT_FOUND) before it embeds the query.
        request = SearchQuery(tuple(cube_ids), query, top_k or DEFAULT_TOP_K, mode, flt)
        hits = self._engine.search(request)
        self._access.record((record.key for record, _ in hits), self._clock())
        return hits
