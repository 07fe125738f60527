"""The daemon's operation layer, assembled from a Config: store, embedder, search
engine and the operations over them. Servicers get one Runtime; services added
later build their own operations from ``runtime.store`` and ``runtime.config``.
"""

from __future__ import annotations

import logging
import time

from memosd.config import Config
from memosd.embedder import Embedder
from memosd.ops.access import AccessTracker
from memosd.ops.cubes import Cubes
from memosd.ops.lifecycle import Sweeper
from memosd.ops.memories import Memories
from memosd.ops.model import ModelOps
from memosd.ops.search import Search
from memosd.search import SearchEngine
from memosd.store import Store

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, config: Config, embedder: Embedder | None = None) -> None:
        self.config = config
        self.started_at = time.time()
        self.store = Store(config.data_dir / "store", map_size=config.store.initial_map_mib << 20)
        try:
            self.embedder = embedder or Embedder.default(
                batch_size=config.embedder.batch_size,
                quantize=config.embedder.quantize,
                quantize_queries=config.embedder.quantize_queries,
            )
            self.engine = SearchEngine(config.data_dir / "index", self.store, self.embedder)
            self.engine.open()
        except BaseException:
            self.store.close()
            raise
        # After open(): the engine has caught up; from here every commit reaches it in order.
        self.engine.follow()
        self.access = AccessTracker(self.store)
        self.cubes = Cubes(self.store, self.engine)
        self.memories = Memories(self.store, self.embedder, config.limits)
        self.search = Search(self.engine, self.access, config.limits)
        self.model = ModelOps(config, self.store, self.search)
        self.sweeper = Sweeper(self.store, config.lifecycle.sweep_batch)

    def snapshot(self) -> None:
        """Persist the search index with the store seq it reflects."""
        self.engine.snapshot()

    def close(self) -> None:
        """Finish queued searches, flush access stats, snapshot the index, close the store."""
        try:
            self.search.close()
            self.access.flush()
            self.snapshot()
        finally:
            self.store.close()
        log.info("store closed")
