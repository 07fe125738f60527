"""The persistent store (LMDB): cubes, versioned memories, vectors, blobs, audit log.

The only package that imports ``lmdb``; its errors leave as ``memosd.errors``.
"""

from memosd.store.record import (
    CHANGE_KINDS,
    MEMORY_STATES,
    MEMORY_TYPES,
    CubeRecord,
    LineageRef,
    MemoryDraft,
    MemoryRecord,
    with_access,
)
from memosd.store.store import SCHEMA_VERSION, Store, StoreStats

__all__ = [
    "CHANGE_KINDS",
    "MEMORY_STATES",
    "MEMORY_TYPES",
    "SCHEMA_VERSION",
    "CubeRecord",
    "LineageRef",
    "MemoryDraft",
    "MemoryRecord",
    "Store",
    "StoreStats",
    "with_access",
]
