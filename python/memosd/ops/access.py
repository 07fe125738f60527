"""Access statistics (count, last access) of memories returned by search.

Hits are counted in memory and written to the store in one transaction per
flush (periodically and at shutdown), so the search hot path never writes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from memosd.store import Store


class AccessTracker:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[int, float]] = {}

    def record(self, keys: Iterable[int], at: float) -> None:
        with self._lock:
            for key in keys:
                count, last = self._pending.get(key, (0, 0.0))
                self._pending[key] = (count + 1, max(last, at))

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write the pending counts; returns how many memories were updated."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            self._store.record_access(batch)
        except BaseException:
            # Keep the counts for the next flush rather than losing them.
            with self._lock:
                for key, (count, last) in batch.items():
                    old_count, old_last = self._pending.get(key, (0, 0.0))
                    self._pending[key] = (old_count + count, max(old_last, last))
            raise
        return len(batch)
