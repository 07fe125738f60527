"""Type stub of ``memosd._native``, the Rust extension (rust/py). Hand-written;
``python -m mypy.stubtest memosd._native`` checks it against the built module."""

from os import PathLike
from typing import Final, final

import numpy as np
import numpy.typing as npt

__all__: list[str] = []

# ---- HNSW index (rust/core/src/hnsw, rust/py/src/hnsw.rs) --------------------

__all__ += ["MISSING_ID", "HnswIndex", "IdFilter"]

MISSING_ID: Final[int]
"""``2**64 - 1``: the id ``HnswIndex.search`` reports where fewer than ``k`` results
exist (its distance is ``+inf``). It cannot be added as an id."""

@final
class IdFilter:
    """A reusable set of ids for ``HnswIndex.search(allowed=...)``. The slots it
    resolves to are cached per index state, so repeated searches skip the lookups."""

    def __new__(cls, ids: npt.NDArray[np.uint64]) -> IdFilter: ...
    def __len__(self) -> int:
        """Number of distinct ids."""

@final
class HnswIndex:
    """Approximate nearest-neighbour index (HNSW), parameters named as in hnswlib.

    Distances (smaller is nearer): ``cosine`` is ``1 - cos`` (vectors are stored
    normalised; zero vectors are rejected), ``ip`` is ``1 - dot``, ``l2`` is the
    squared Euclidean distance. The graph is walked on int8-quantised copies of the
    vectors and the candidates are re-ranked with exact float32 distances.

    The index grows as needed: ``max_elements`` only reserves memory up front.
    Searches may run concurrently from many threads; ``add`` and ``delete`` wait for
    them. Every call releases the GIL, and batch ``add``/``search`` use all cores.
    Bad input raises ``memosd.errors.InvalidArgumentError`` (a ``ValueError``)
    naming the argument and what was expected, and leaves the index unchanged.
    """

    def __new__(
        cls,
        dim: int,
        metric: str = "cosine",
        m: int = 16,
        ef_construction: int = 200,
        max_elements: int = 0,
    ) -> HnswIndex:
        """``metric`` is ``"cosine"``, ``"ip"`` or ``"l2"``; ``m`` in 2..=1024."""

    def add(self, ids: npt.NDArray[np.uint64], vectors: npt.NDArray[np.float32]) -> None:
        """Insert ``ids`` (uint64, shape ``(n,)``) with ``vectors`` (float32, shape
        ``(n, dim)``). Re-adding an id replaces its vector; within one call the last
        row for an id wins. Rows must be finite."""

    def search(
        self,
        queries: npt.NDArray[np.float32],
        k: int = 10,
        ef_search: int = 64,
        allowed: npt.NDArray[np.uint64] | IdFilter | None = None,
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        """The ``k`` nearest live ids of each query row (float32, shape ``(q, dim)``):
        ``(ids, distances)``, both of shape ``(q, k)``, nearest first. Missing results
        are ``MISSING_ID`` with distance ``+inf``. ``ef_search`` (raised to ``k`` if
        lower) is the beam width. ``allowed`` restricts results to those ids (unknown
        ids are ignored): the filter is applied inside the graph walk, and a small
        allowed set is scanned exactly instead, so recall holds at any selectivity."""

    def delete(self, ids: npt.NDArray[np.uint64]) -> int:
        """Delete ``ids`` (unknown ones are ignored); returns how many were present.
        Deleted ids are never returned; their slots are reused by later adds."""

    def save(self, path: str | PathLike[str]) -> None:
        """Write the index to ``path`` atomically (versioned, CRC-32 checked)."""

    @staticmethod
    def load(path: str | PathLike[str]) -> HnswIndex:
        """Read an index written by ``save``. A truncated or damaged file raises
        ``memosd.errors.CorruptDataError``; a missing file ``OSError``."""

    def memory_bytes(self) -> int:
        """Approximate bytes held by the index."""

    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def m(self) -> int: ...
    @property
    def ef_construction(self) -> int: ...
    def __len__(self) -> int:
        """Number of live ids."""

    def __contains__(self, id: int, /) -> bool: ...

# ---- KV packing and paging (rust/core/src/kv, rust/py/src/kv.rs) -------------
