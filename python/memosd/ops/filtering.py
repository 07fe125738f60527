"""Evaluation of a SearchFilter against one record (ListMemories).

The search engine evaluates the same filter inside its indexes; this is the
record-at-a-time form for scans of the store. A memory whose TTL has passed
counts as EXPIRED here even before the sweep marks it.
"""

from __future__ import annotations

from memosd.search import SearchFilter
from memosd.store import MemoryRecord


def effective_state(record: MemoryRecord, now: float) -> str:
    if record.state in ("ACTIVE", "ARCHIVED") and record.expired(now):
        return "EXPIRED"
    return record.state


def matches(record: MemoryRecord, flt: SearchFilter, now: float) -> bool:
    if effective_state(record, now) not in flt.states:
        return False
    if flt.tags_any and not any(tag in record.tags for tag in flt.tags_any):
        return False
    if any(tag not in record.tags for tag in flt.tags_all):
        return False
    if any(record.metadata.get(k) != v for k, v in flt.metadata.items()):
        return False
    return _within(record.created_at, flt.created_after, flt.created_before) and _within(
        record.updated_at, flt.updated_after, flt.updated_before
    )


def _within(value: float, after: float | None, before: float | None) -> bool:
    return (after is None or value > after) and (before is None or value < before)
