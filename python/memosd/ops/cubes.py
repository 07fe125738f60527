"""MemCube operations: create, get, list, delete."""

from __future__ import annotations

import time
from collections.abc import Callable

from memosd.ops import validate
from memosd.search import SearchEngine
from memosd.store import CubeRecord, Store


class Cubes:
    def __init__(
        self, store: Store, engine: SearchEngine, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._engine = engine
        self._clock = clock

    def create(self, name: str) -> CubeRecord:
        return self._store.create_cube(validate.cube_name(name), self._clock())

    def get(self, cube_id: str) -> CubeRecord:
        return self._store.get_cube(validate.identifier("cube_id", cube_id))

    def list(self) -> list[CubeRecord]:
        return self._store.list_cubes()

    def delete(self, cube_id: str) -> int:
        """Delete the cube with every memory and version in it; returns the memory count.

        The purged keys reach the search index through the store's commit listener;
        the engine then drops the cube's (empty) graph as well.
        """
        removed = self._store.delete_cube(validate.identifier("cube_id", cube_id))
        self._engine.remove_cube(cube_id)
        return removed
