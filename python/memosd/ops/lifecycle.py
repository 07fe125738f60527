"""The TTL sweep: memories whose expiry passed become EXPIRED (a new version each).

Search never returns an expired memory even before the sweep runs; the sweep
makes the state visible in the store, in history and in listings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from memosd.store import Store

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, store: Store, batch: int, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._batch = max(1, batch)
        self._clock = clock

    def sweep(self) -> int:
        """Expire everything due now, one transaction per batch; returns the count."""
        total = 0
        while True:
            expired = self._store.expire_due(self._clock(), self._batch)
            total += len(expired)
            if len(expired) < self._batch:
                break
        if total:
            log.info("TTL sweep marked %d memories EXPIRED", total)
        return total
