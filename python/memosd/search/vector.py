"""Vector search: one HNSW graph (``memosd._native.HnswIndex``, cosine) per cube.

A graph per cube keeps the common query, one cube with the default filter,
free of any ``allowed`` set: when every vector of the cube passes the filter
the search runs unrestricted. Dropping a cube drops its graph.

Snapshots: each cube's graph is saved as ``<name>.hnsw`` with the list of its
keys beside it (``<name>.keys.npy``), so that loading can reconcile the graph
with the store by set difference.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from memosd.errors import CorruptDataError

if TYPE_CHECKING:
    from memosd._native import HnswImage, HnswIndex, IdFilter

M = 16
# 100 rather than the index benchmark's 200: inserts (on the write path of every
# AddMemories) run about 2x faster, and recall@10 at ef_search 64 stayed at
# 0.999 against exact search on 20k clustered 384-d vectors (1.000 with 200).
EF_CONSTRUCTION = 100
MIN_EF_SEARCH = 64
NO_ID = np.uint64(2**64 - 1)
# Vectors per graph insert. A search waits for the insert under way (the graph's
# write lock hands over to waiting searches between two inserts): at 50k vectors,
# 128 took 15-20 ms on average, a batch of 1,000 took 110-125.
INSERT_BATCH = 128


@dataclass(frozen=True)
class CubeImage:
    """A cube's graph serialised at one moment, with the keys it held then."""

    graph: HnswImage
    keys: np.ndarray

    def save(self, stem: Path) -> None:
        """Write ``stem.hnsw`` and ``stem.keys.npy``."""
        self.graph.save(str(stem.with_suffix(".hnsw")))
        np.save(stem.with_suffix(".keys.npy"), self.keys)


class CubeVectors:
    """The graph of one cube and the keys it holds."""

    def __init__(self, dim: int, index: HnswIndex | None = None, keys: Iterable[int] = ()) -> None:
        from memosd._native import HnswIndex  # the native module loads on first use

        self.dim = dim
        self.index = index if index is not None else HnswIndex(dim, "cosine", M, EF_CONSTRUCTION)
        self.keys: set[int] = set(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, keys: list[int], vectors: np.ndarray) -> None:
        """Add or replace vectors (rows of ``vectors``, float32 (n, dim))."""
        if not keys:
            return
        self.index.add(np.asarray(keys, dtype=np.uint64), np.ascontiguousarray(vectors))
        self.keys.update(keys)

    def link_hidden(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Insert ``keys`` (uint64) with their vectors, returned by no search until
        ``reveal``, INSERT_BATCH at a time."""
        for start in range(0, len(keys), INSERT_BATCH):
            rows = np.ascontiguousarray(vectors[start : start + INSERT_BATCH], dtype=np.float32)
            self.index.add(keys[start : start + INSERT_BATCH], rows, hidden=True)

    def reveal(self, keys: list[int]) -> None:
        """Let searches return ``keys``, inserted by ``link_hidden``."""
        if keys:
            self.index.reveal(np.asarray(keys, dtype=np.uint64))
            self.keys.update(keys)

    def drop_hidden(self, keys: Iterable[int]) -> None:
        """Remove those of ``keys`` that ``link_hidden`` inserted and no ``reveal``
        followed."""
        hidden = [k for k in keys if k not in self.keys]
        if hidden:
            self.index.delete(np.asarray(hidden, dtype=np.uint64))

    def delete(self, keys: Iterable[int]) -> None:
        present = [k for k in keys if k in self.keys]
        if present:
            self.index.delete(np.asarray(present, dtype=np.uint64))
            self.keys.difference_update(present)

    def search(
        self, query: np.ndarray, k: int, allowed: IdFilter | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Keys (uint64) and cosine similarities (float64) of the nearest ``k``, best first."""
        if not self.keys or k <= 0:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float64)
        k = min(k, len(self.keys))
        ids, dist = self.index.search(
            query.reshape(1, -1), k=k, ef_search=max(MIN_EF_SEARCH, k), allowed=allowed
        )
        found = ids[0] != NO_ID
        return ids[0][found], 1.0 - dist[0][found].astype(np.float64)

    def image(self) -> CubeImage:
        """The graph and its keys as they are now, to be written by ``CubeImage.save``
        (the copy is quick; the disk is left to a moment when no lock is held)."""
        keys = np.fromiter(self.keys, dtype=np.uint64, count=len(self.keys))
        return CubeImage(self.index.image(), keys)

    @classmethod
    def load(cls, stem: Path, dim: int) -> CubeVectors:
        """Read a graph saved by ``save``; CorruptDataError if it does not match."""
        try:
            keys = np.load(stem.with_suffix(".keys.npy"), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CorruptDataError(f"{stem}.keys.npy: {e}") from e
        from memosd._native import HnswIndex

        index = HnswIndex.load(str(stem.with_suffix(".hnsw")))
        if len(index) != len(keys):
            raise CorruptDataError(f"{stem}: graph holds {len(index)} ids, key list {len(keys)}")
        return cls(dim, index, (int(k) for k in keys))
