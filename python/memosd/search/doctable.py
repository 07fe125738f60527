"""In-memory table of the memory heads that the search indexes hold.

Each head lives in a dense *slot*; the columns that filters test (cube, state,
times, expiry) are NumPy arrays indexed by slot, so that a filter over 100k
memories is a handful of vectorised comparisons rather than a Python loop.
Tags and metadata pairs have inverted sets of slots. The lexical index scores
by slot too, so a filter mask applies to it directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from memosd.store import with_access

if TYPE_CHECKING:
    from memosd.store import MemoryRecord

STATES = ("ACTIVE", "ARCHIVED", "FROZEN", "EXPIRED", "MERGED", "DELETED")
STATE_CODE = {s: i for i, s in enumerate(STATES)}
NO_CUBE = -1
NEVER = np.inf  # expires_at of a memory without a TTL

_INITIAL_CAPACITY = 1024


class DocTable:
    """Heads by store key and by slot. Not thread-safe: the engine serialises writers."""

    def __init__(self) -> None:
        self._slot_of: dict[int, int] = {}
        self._records: list[MemoryRecord | None] = []
        self._free: list[int] = []
        self._cube_code: dict[str, int] = {}
        self._cube_ids: list[str] = []
        self._cube_size: list[int] = []
        self._tag_slots: dict[str, set[int]] = {}
        self._meta_slots: dict[tuple[str, str], set[int]] = {}
        self.version = 0  # bumped by every change, so derived masks know when they are stale
        cap = _INITIAL_CAPACITY
        self.keys = np.zeros(cap, dtype=np.uint64)
        self.cube = np.full(cap, NO_CUBE, dtype=np.int32)
        self.state = np.zeros(cap, dtype=np.int8)
        self.created = np.zeros(cap, dtype=np.float64)
        self.updated = np.zeros(cap, dtype=np.float64)
        self.expires = np.full(cap, NEVER, dtype=np.float64)

    def __len__(self) -> int:
        return len(self._slot_of)

    @property
    def capacity(self) -> int:
        return len(self.keys)

    def slot(self, key: int) -> int | None:
        return self._slot_of.get(key)

    def record(self, key: int) -> MemoryRecord | None:
        slot = self._slot_of.get(key)
        return None if slot is None else self._records[slot]

    def records(self) -> Iterator[MemoryRecord]:
        return (r for r in self._records if r is not None)

    def keys_of_cube(self, cube_id: str) -> list[int]:
        code = self._cube_code.get(cube_id)
        if code is None:
            return []
        return [int(k) for k in self.keys[self.cube == code]]

    def cube_code(self, cube_id: str) -> int | None:
        return self._cube_code.get(cube_id)

    def cube_size(self, code: int) -> int:
        return self._cube_size[code]

    def cube_holds_memories(self, cube_id: str) -> bool:
        code = self._cube_code.get(cube_id)
        return code is not None and self._cube_size[code] > 0

    def tag_slots(self, tag: str) -> set[int]:
        return self._tag_slots.get(tag, set())

    def meta_slots(self, name: str, value: str) -> set[int]:
        return self._meta_slots.get((name, value), set())

    def put(self, rec: MemoryRecord) -> int:
        """Insert or replace the head of ``rec.key``; returns its slot."""
        self.version += 1
        slot = self._slot_of.get(rec.key)
        if slot is None:
            slot = self._allocate()
            self._slot_of[rec.key] = slot
        else:
            self._unindex(slot)
        code = self._cube_code.get(rec.cube_id)
        if code is None:
            code = len(self._cube_ids)
            self._cube_code[rec.cube_id] = code
            self._cube_ids.append(rec.cube_id)
            self._cube_size.append(0)
        self._records[slot] = rec
        self.keys[slot] = rec.key
        self.cube[slot] = code
        self._cube_size[code] += 1
        self.state[slot] = STATE_CODE[rec.state]
        self.created[slot] = rec.created_at
        self.updated[slot] = rec.updated_at
        self.expires[slot] = NEVER if rec.expires_at is None else rec.expires_at
        for tag in rec.tags:
            self._tag_slots.setdefault(tag, set()).add(slot)
        for pair in rec.metadata.items():
            self._meta_slots.setdefault(pair, set()).add(slot)
        return slot

    def set_access(self, key: int, count: int, last_at: float | None) -> bool:
        """New access statistics for the head of ``key`` (no filter reads them: nothing
        is re-indexed and ``version`` stays). False if the table does not hold it."""
        slot = self._slot_of.get(key)
        if slot is None or (rec := self._records[slot]) is None:
            return False
        self._records[slot] = with_access(rec, count, last_at)
        return True

    def remove(self, key: int) -> int | None:
        """Forget ``key``; returns the slot it had (now free) or None."""
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return None
        self.version += 1
        self._unindex(slot)
        self._records[slot] = None
        self.cube[slot] = NO_CUBE
        self.expires[slot] = NEVER
        self._free.append(slot)
        return slot

    def remove_many(self, keys: Iterable[int]) -> list[int]:
        return [s for s in (self.remove(k) for k in keys) if s is not None]

    def _unindex(self, slot: int) -> None:
        old = self._records[slot]
        if old is None:
            return
        self._cube_size[int(self.cube[slot])] -= 1
        for tag in old.tags:
            _discard(self._tag_slots, tag, slot)
        for pair in old.metadata.items():
            _discard(self._meta_slots, pair, slot)

    def _allocate(self) -> int:
        if self._free:
            return self._free.pop()
        slot = len(self._records)
        self._records.append(None)
        if slot >= self.capacity:
            self._grow(2 * self.capacity)
        return slot

    def _grow(self, cap: int) -> None:
        def grown(a: np.ndarray, fill: float) -> np.ndarray:
            b = np.full(cap, fill, dtype=a.dtype)
            b[: len(a)] = a
            return b

        self.keys = grown(self.keys, 0)
        self.cube = grown(self.cube, NO_CUBE)
        self.state = grown(self.state, 0)
        self.created = grown(self.created, 0)
        self.updated = grown(self.updated, 0)
        self.expires = grown(self.expires, NEVER)


def _discard(index: dict, name: object, slot: int) -> None:
    slots = index.get(name)
    if slots is not None:
        slots.discard(slot)
        if not slots:
            del index[name]
