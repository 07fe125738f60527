"""Search over memories: HNSW vectors, BM25 text, fused (HYBRID), filtered inside the index."""

from memosd.search.engine import SearchEngine
from memosd.search.filter import SearchFilter
from memosd.search.query import MODES, SearchQuery

__all__ = ["MODES", "SearchEngine", "SearchFilter", "SearchQuery"]
