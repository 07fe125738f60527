"""A search request as the operation layer hands it to the engine."""

from __future__ import annotations

from dataclasses import dataclass, field

from memosd.errors import InvalidArgumentError
from memosd.search.filter import SearchFilter

MODES = ("VECTOR", "LEXICAL", "HYBRID")
MAX_TOP_K = 1000
MAX_QUERY_CHARS = 10_000


@dataclass(frozen=True)
class SearchQuery:
    cube_ids: tuple[str, ...]
    query: str
    top_k: int = 10
    mode: str = "HYBRID"
    filter: SearchFilter = field(default_factory=SearchFilter)

    def __post_init__(self) -> None:
        if isinstance(self.cube_ids, str):
            raise InvalidArgumentError("cube_ids", "expected a list of cube ids")
        cube_ids = tuple(dict.fromkeys(self.cube_ids))  # dedupe, keep order
        if not cube_ids:
            raise InvalidArgumentError("cube_ids", "at least one cube id is required")
        if any(not isinstance(c, str) or not c for c in cube_ids):
            raise InvalidArgumentError("cube_ids", "cube ids must be non-empty strings")
        object.__setattr__(self, "cube_ids", cube_ids)
        if not isinstance(self.query, str) or not self.query.strip():
            raise InvalidArgumentError("query", "must be non-empty text")
        if len(self.query) > MAX_QUERY_CHARS:
            raise InvalidArgumentError(
                "query", f"{len(self.query)} characters; the limit is {MAX_QUERY_CHARS}"
            )
        if not isinstance(self.top_k, int) or not 1 <= self.top_k <= MAX_TOP_K:
            raise InvalidArgumentError("top_k", f"must be in 1..{MAX_TOP_K}, got {self.top_k}")
        if self.mode not in MODES:
            raise InvalidArgumentError(
                "mode", f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}"
            )
        if not isinstance(self.filter, SearchFilter):
            raise InvalidArgumentError("filter", "expected a SearchFilter")
