"""Plaintext memory operations: add, read, update, delete, history, rollback, list.

Content is embedded before the store transaction (embedding is slow and needs
no lock); the transaction writes head, version and vector together, and the
store hands the new heads to the search engine right after the commit.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from memosd.config import LimitsConfig
from memosd.embedder import Embedder
from memosd.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from memosd.ops import filtering, paging, validate
from memosd.search import SearchFilter
from memosd.store import MemoryRecord, Store

# States whose memories no longer change except through Rollback.
CLOSED_STATES = ("DELETED", "MERGED")


@dataclass(frozen=True, slots=True)
class NewMemory:
    content: str
    tags: Sequence[str] = ()
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    priority: int = 0
    ttl_seconds: float | None = None
    source: str | None = None
    lineage: Sequence[tuple[str, int]] = ()


@dataclass(frozen=True, slots=True)
class MemoryUpdate:
    """Fields left None are kept. ``ttl_seconds`` 0 removes the expiry."""

    content: str | None = None
    tags: Sequence[str] | None = None
    metadata: Mapping[str, str] | None = None
    priority: int | None = None
    ttl_seconds: float | None = None
    state: str | None = None

    def only_state(self) -> bool:
        return all(
            v is None
            for v in (self.content, self.tags, self.metadata, self.priority, self.ttl_seconds)
        )


class Memories:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        limits: LimitsConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._limits = limits
        self._clock = clock

    def add(self, cube_id: str, items: Sequence[NewMemory]) -> list[MemoryRecord]:
        """Add a batch atomically; records come back in input order."""
        validate.identifier("cube_id", cube_id)
        validate.batch("memories", len(items), self._limits)
        now = self._clock()
        drafts = [
            validate.draft(
                i,
                item.content,
                item.tags,
                item.metadata,
                item.priority,
                item.ttl_seconds,
                item.source,
                item.lineage,
                self._limits,
                now,
            )
            for i, item in enumerate(items)
        ]
        self._require_cube(cube_id)
        vectors = self._embedder.encode([d.content for d in drafts])
        return self._store.add_memories(cube_id, drafts, vectors, now)

    def get(self, cube_id: str, memory_id: str, version: int | None = None) -> MemoryRecord:
        self._check_ids(cube_id, memory_id)
        if version is not None:
            validate.version("version", version)
        return self._store.get(cube_id, memory_id, version)

    def history(self, cube_id: str, memory_id: str) -> list[MemoryRecord]:
        self._check_ids(cube_id, memory_id)
        return self._store.history(cube_id, memory_id)

    def update(
        self,
        cube_id: str,
        memory_id: str,
        update: MemoryUpdate,
        expected_version: int | None = None,
    ) -> MemoryRecord:
        self._check_ids(cube_id, memory_id)
        if expected_version is not None:
            validate.version("expected_version", expected_version)
        new_content = (
            None
            if update.content is None
            else validate.content("content", update.content, self._limits)
        )
        new_tags = None if update.tags is None else validate.tags("tags", update.tags, self._limits)
        new_meta = (
            None
            if update.metadata is None
            else validate.metadata("metadata", update.metadata, self._limits)
        )
        if update.priority is not None:
            validate.priority("priority", update.priority)
        ttl = validate.ttl_seconds("ttl_seconds", update.ttl_seconds)
        if update.state is not None:
            validate.state("state", update.state)
        if update.only_state() and update.state is None:
            raise InvalidArgumentError(
                "update",
                "nothing to change: set content, tags, metadata, priority, ttl_seconds or state",
            )
        vector = self._embed_one(new_content) if new_content is not None else None
        now = self._clock()

        def change(head: MemoryRecord, _: Callable[[int], MemoryRecord]) -> MemoryRecord:
            _refuse_closed(head, "updated")
            if head.state == "FROZEN" and not (
                update.only_state() and update.state in ("ACTIVE", "ARCHIVED")
            ):
                raise FailedPreconditionError(
                    f"memory {memory_id} is FROZEN; unfreeze it (state ACTIVE) before changing it"
                )
            expires_at = head.expires_at
            if update.ttl_seconds is not None:
                expires_at = None if ttl is None else now + ttl
            return dataclasses.replace(
                head,
                content=head.content if new_content is None else new_content,
                tags=head.tags if new_tags is None else new_tags,
                metadata=head.metadata if new_meta is None else new_meta,
                priority=head.priority if update.priority is None else update.priority,
                expires_at=expires_at,
                state=head.state if update.state is None else update.state,
                change_kind="STATE" if update.only_state() else "UPDATE",
            )

        return self._store.commit_version(
            cube_id, memory_id, change, now, expected_version=expected_version, vector=vector
        )

    def delete(self, cube_id: str, memory_id: str, purge: bool = False) -> MemoryRecord | None:
        """Soft delete (a DELETED version; deleting twice changes nothing), or purge for
        good (returns None). FROZEN memories refuse both."""
        self._check_ids(cube_id, memory_id)

        def refuse_frozen(head: MemoryRecord) -> None:
            if head.state == "FROZEN":
                raise FailedPreconditionError(
                    f"memory {memory_id} is FROZEN; unfreeze it to delete it"
                )

        if purge:
            self._store.purge(cube_id, memory_id, refuse_frozen)
            return None
        head = self._store.get(cube_id, memory_id)
        refuse_frozen(head)
        if head.state == "DELETED":
            return head

        def change(current: MemoryRecord, _: Callable[[int], MemoryRecord]) -> MemoryRecord:
            refuse_frozen(current)
            return dataclasses.replace(current, state="DELETED", change_kind="DELETE")

        return self._store.commit_version(cube_id, memory_id, change, self._clock())

    def rollback(
        self, cube_id: str, memory_id: str, version: int, expected_version: int | None = None
    ) -> MemoryRecord:
        """A new version with the content, tags, metadata and priority of ``version``.

        A DELETED or EXPIRED memory comes back ACTIVE (without an expiry); FROZEN refuses.
        """
        self._check_ids(cube_id, memory_id)
        validate.version("version", version)
        if expected_version is not None:
            validate.version("expected_version", expected_version)
        target = self._store.get(cube_id, memory_id, version)
        vector = self._embed_one(target.content)

        def change(head: MemoryRecord, read: Callable[[int], MemoryRecord]) -> MemoryRecord:
            if head.state == "FROZEN":
                raise FailedPreconditionError(f"memory {memory_id} is FROZEN; unfreeze it first")
            old = read(version)
            revived = head.state in ("DELETED", "EXPIRED")
            return dataclasses.replace(
                head,
                content=old.content,
                tags=old.tags,
                metadata=old.metadata,
                priority=old.priority,
                state="ACTIVE" if revived else head.state,
                expires_at=None if revived else head.expires_at,
                change_kind="ROLLBACK",
            )

        return self._store.commit_version(
            cube_id,
            memory_id,
            change,
            self._clock(),
            expected_version=expected_version,
            vector=vector,
        )

    def list(
        self, cube_id: str, page_size: int, page_token: str, flt: SearchFilter
    ) -> tuple[list[MemoryRecord], str]:
        """One page of a cube's memories in creation order and the next page's token."""
        validate.identifier("cube_id", cube_id)
        if page_size < 0 or page_size > self._limits.max_page_size:
            raise InvalidArgumentError(
                "page_size", f"must be in 0..{self._limits.max_page_size}, got {page_size}"
            )
        after = paging.decode(page_token, cube_id)
        now = self._clock()
        page, next_after = self._store.list_page(
            cube_id, after, lambda r: filtering.matches(r, flt, now), page_size or 50
        )
        return page, "" if next_after is None else paging.encode(cube_id, next_after)

    def _embed_one(self, text: str) -> np.ndarray:
        return self._embedder.encode([text])[0]

    def _check_ids(self, cube_id: str, memory_id: str) -> None:
        validate.identifier("cube_id", cube_id)
        validate.identifier("memory_id", memory_id)

    def _require_cube(self, cube_id: str) -> None:
        if not self._store.cube_exists(cube_id):
            raise NotFoundError(f"cube {cube_id} not found")


def _refuse_closed(head: MemoryRecord, verb: str) -> None:
    if head.state in CLOSED_STATES:
        raise FailedPreconditionError(
            f"memory {head.id} is {head.state} and cannot be {verb}; roll it back to restore it"
        )
