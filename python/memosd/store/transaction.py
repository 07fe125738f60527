"""One write transaction of the store: head/version/index bookkeeping and the audit trail.

Every write transaction takes the next sequence number; each memory whose head
it changes gets an audit entry under that number, which is what
``Store.changes_since`` replays to bring a search index up to date.

``load_memory`` / ``load_head`` read a stored version back with its memory's access
statistics, for writes and reads alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lmdb
import numpy as np

from memosd.errors import NotFoundError
from memosd.store import keys
from memosd.store.record import (
    CubeRecord,
    MemoryRecord,
    pack,
    pack_cube,
    pack_memory,
    unpack_cube,
    unpack_memory,
)

# States in which a memory's TTL still matters (the sweep marks them EXPIRED).
EXPIRABLE = frozenset({"ACTIVE", "ARCHIVED"})


def load_memory(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], key: int, raw: bytes
) -> MemoryRecord:
    """The stored version ``raw`` of memory ``key`` with the memory's access statistics."""
    return unpack_memory(raw, txn.get(keys.u64(key), db=dbs["access"]))


def load_head(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], key: int) -> MemoryRecord | None:
    raw = txn.get(keys.u64(key), db=dbs["heads"])
    return None if raw is None else load_memory(txn, dbs, key, raw)


class WriteTxn:
    def __init__(self, txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> None:
        self.txn = txn
        self.dbs = dbs
        self.seq = self.read_counter(b"seq") + 1
        self.changed: dict[int, MemoryRecord] = {}
        # New access statistics {key: (count, last access)}, for access subscribers.
        self.accessed: dict[int, tuple[int, float | None]] = {}
        self.removed: list[int] = []
        # What preparers returned, to call if this transaction is not committed.
        self.undo: list[Callable[[], None]] = []
        self._audit_index = 0
        self.txn.put(b"seq", keys.u64(self.seq), db=dbs["meta"])

    # counters -------------------------------------------------------------
    def read_counter(self, name: bytes) -> int:
        raw = self.txn.get(name, db=self.dbs["meta"])
        return keys.read_u64(raw) if raw else 0

    def next_keys(self, count: int) -> range:
        """``count`` fresh memory keys (never reused)."""
        first = self.read_counter(b"next_key") + 1
        self.txn.put(b"next_key", keys.u64(first + count - 1), db=self.dbs["meta"])
        return range(first, first + count)

    # cubes ----------------------------------------------------------------
    def cube(self, cube_id: str) -> CubeRecord:
        raw = self.txn.get(keys.text(cube_id), db=self.dbs["cubes"])
        if raw is None:
            raise NotFoundError(f"cube {cube_id} not found")
        return unpack_cube(raw)

    def put_cube(self, cube: CubeRecord) -> None:
        self.txn.put(keys.text(cube.id), pack_cube(cube), db=self.dbs["cubes"])

    # memories -------------------------------------------------------------
    def head(self, cube_id: str, memory_id: str) -> MemoryRecord:
        raw_key = self.txn.get(keys.text(memory_id), db=self.dbs["ids"])
        record = load_head(self.txn, self.dbs, keys.read_u64(raw_key)) if raw_key else None
        if record is None or record.cube_id != cube_id:
            raise NotFoundError(f"memory {memory_id} not found in cube {cube_id}")
        return record

    def version(self, head: MemoryRecord, number: int) -> MemoryRecord:
        if number == head.version:
            return head
        raw = self.txn.get(keys.version(head.cube_id, head.key, number), db=self.dbs["versions"])
        if raw is None:
            raise NotFoundError(f"memory {head.id} has no version {number}")
        return load_memory(self.txn, self.dbs, head.key, raw)

    def put_memory(
        self, old: MemoryRecord | None, new: MemoryRecord, vector: np.ndarray | None
    ) -> None:
        """Write ``new`` as the head and as a version snapshot (and its vector if given)."""
        packed = pack_memory(new)
        if old is None:
            self.txn.put(keys.text(new.id), keys.u64(new.key), db=self.dbs["ids"])
            self.txn.put(keys.member(new.cube_id, new.key), b"", db=self.dbs["members"])
        self.put_head(old, new, packed)
        version_key = keys.version(new.cube_id, new.key, new.version)
        self.txn.put(version_key, packed, db=self.dbs["versions"])
        if vector is not None:
            blob = np.ascontiguousarray(vector, dtype="<f4").tobytes()
            self.txn.put(keys.u64(new.key), blob, db=self.dbs["vectors"])
        self.audit(new.change_kind, new.cube_id, new.id, new.key, new.version)
        self.changed[new.key] = new

    def put_head(self, old: MemoryRecord | None, new: MemoryRecord, packed: bytes) -> None:
        if old is not None and old.expires_at is not None and old.state in EXPIRABLE:
            self.txn.delete(keys.expiry(old.expires_at, old.key), db=self.dbs["expiry"])
        if new.expires_at is not None and new.state in EXPIRABLE:
            self.txn.put(keys.expiry(new.expires_at, new.key), b"", db=self.dbs["expiry"])
        self.txn.put(keys.u64(new.key), packed, db=self.dbs["heads"])

    def purge(self, head: MemoryRecord) -> None:
        """Remove a memory for good: head, every version, vector and index entries."""
        dbs = self.dbs
        if head.expires_at is not None and head.state in EXPIRABLE:
            self.txn.delete(keys.expiry(head.expires_at, head.key), db=dbs["expiry"])
        self.txn.delete(keys.u64(head.key), db=dbs["heads"])
        self.txn.delete(keys.u64(head.key), db=dbs["vectors"])
        self.txn.delete(keys.u64(head.key), db=dbs["access"])
        self.txn.delete(keys.text(head.id), db=dbs["ids"])
        self.txn.delete(keys.member(head.cube_id, head.key), db=dbs["members"])
        prefix = keys.version_prefix(head.cube_id, head.key)
        cursor = self.txn.cursor(db=dbs["versions"])
        if cursor.set_range(prefix):
            while cursor.key().startswith(prefix):
                if not cursor.delete():
                    break
        self.audit("PURGE", head.cube_id, head.id, head.key, head.version)
        self.changed.pop(head.key, None)
        self.removed.append(head.key)

    def audit(
        self, op: str, cube_id: str, memory_id: str | None, key: int | None, version: int | None
    ) -> None:
        entry = {
            "op": op,
            "cube_id": cube_id,
            "memory_id": memory_id,
            "key": key,
            "version": version,
            "at": time.time(),
        }
        self.txn.put(keys.audit(self.seq, self._audit_index), pack(entry), db=self.dbs["audit"])
        self._audit_index += 1
