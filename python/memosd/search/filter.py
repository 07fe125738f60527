"""Search filters, and their evaluation to the set of slots a search may return.

The result is a boolean mask over the doc table's slots. The engine turns it
into the ``allowed`` id set of the HNSW search and applies it to the BM25
scores before ranking, so filtering happens inside the index search and never
costs recall.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from memosd._native import IdFilter
from memosd.errors import InvalidArgumentError
from memosd.search.doctable import NEVER, STATE_CODE, STATES, DocTable

if TYPE_CHECKING:
    from memosd.store import MemoryRecord


@dataclass(frozen=True)
class SearchFilter:
    """What a memory must satisfy to be returned. Empty fields do not restrict.

    Times are epoch seconds; all time bounds are exclusive. Memories whose
    ``expires_at`` has passed are never returned, whatever the filter says.
    """

    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    states: tuple[str, ...] = ("ACTIVE",)
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_after: float | None = None
    created_before: float | None = None
    updated_after: float | None = None
    updated_before: float | None = None

    def __post_init__(self) -> None:
        for name in ("tags_any", "tags_all", "states"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise InvalidArgumentError(f"filter.{name}", "expected a list of strings")
            object.__setattr__(self, name, tuple(value))
        if not self.states:
            object.__setattr__(self, "states", ("ACTIVE",))
        for s in self.states:
            if s not in STATE_CODE:
                raise InvalidArgumentError(
                    "filter.states", f"unknown state {s!r}; expected one of {', '.join(STATES)}"
                )
        for k, v in self.metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidArgumentError("filter.metadata", "keys and values must be strings")
        for name in ("created_after", "created_before", "updated_after", "updated_before"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise InvalidArgumentError(f"filter.{name}", f"must be a finite time, got {value}")

    @property
    def is_default(self) -> bool:
        """True when only the default state restriction applies."""
        return (
            self.states == ("ACTIVE",)
            and not self.tags_any
            and not self.tags_all
            and not self.metadata
            and self.created_after is None
            and self.created_before is None
            and self.updated_after is None
            and self.updated_before is None
        )

    def matches(self, rec: MemoryRecord, now: float) -> bool:
        """Whether one record passes (the per-record form of ``allowed_mask``)."""
        return (
            rec.state in self.states
            and not (rec.expires_at is not None and rec.expires_at <= now)
            and (not self.tags_any or any(t in rec.tags for t in self.tags_any))
            and all(t in rec.tags for t in self.tags_all)
            and all(rec.metadata.get(k) == v for k, v in self.metadata.items())
            and (self.created_after is None or rec.created_at > self.created_after)
            and (self.created_before is None or rec.created_at < self.created_before)
            and (self.updated_after is None or rec.updated_at > self.updated_after)
            and (self.updated_before is None or rec.updated_at < self.updated_before)
        )


class FilterMask:
    """A filter's mask over the slots, and what searches derive from it per cube."""

    def __init__(self, mask: np.ndarray, table: DocTable, valid_until: float) -> None:
        mask.flags.writeable = False  # shared by concurrent searches
        self.mask = mask
        self._table = table
        self.version = table.version
        self.valid_until = valid_until
        self._in_cube: dict[int, np.ndarray] = {}
        self._count_in_cube: dict[int, int] = {}
        self._ids_in_cube: dict[tuple[int, bool], IdFilter] = {}

    def _allowed_in_cube(self, code: int) -> np.ndarray:
        """The mask of cube ``code``'s allowed slots."""
        allowed = self._in_cube.get(code)
        if allowed is None:
            allowed = self._in_cube[code] = self.mask & (self._table.cube == code)
        return allowed

    def count_in_cube(self, code: int) -> int:
        """How many memories of cube ``code`` the filter allows."""
        count = self._count_in_cube.get(code)
        if count is None:
            count = self._count_in_cube[code] = int(np.count_nonzero(self._allowed_in_cube(code)))
        return count

    def keys_in_cube(self, code: int) -> np.ndarray:
        """Store keys of the allowed slots of cube ``code``."""
        return self._table.keys[self._allowed_in_cube(code)]

    def ids_in_cube(self, code: int, complete: bool) -> IdFilter:
        """Cube ``code``'s allowed keys as a graph search's filter, kept for the next
        searches: the graph finds their slots once per state of the graph, not once
        per search (at 100k keys 2.7 ms a search).

        Where the filter leaves out fewer of the cube's memories than it allows, the
        filter lists those it leaves out instead, if ``complete`` (every key the
        cube's graph may return is in the table, so a key not left out is allowed).
        Listing 100k allowed keys because one memory is archived cost 4 ms after each
        write (the filter built again, and resolved again by the changed graph)."""
        cached = self._ids_in_cube.get((code, complete))
        if cached is not None:
            return cached
        allowed = self.count_in_cube(code)
        if complete and self._table.cube_size(code) - allowed < allowed:
            left_out = self._table.keys[(self._table.cube == code) & ~self.mask]
            ids = IdFilter(left_out, excluding=True)
        else:
            ids = IdFilter(self.keys_in_cube(code))
        self._ids_in_cube[(code, complete)] = ids
        return ids


class MaskCache:
    """Recent filters' masks, reused while the doc table is unchanged and no allowed
    memory has expired since.

    Searches repeat a few filters (most often the default one), and a mask is a
    handful of passes over every slot: at 100k memories that was the largest cost
    of a search after the query embedding. Callers hold the engine's table lock.
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._masks: dict[tuple, FilterMask] = {}

    def get(
        self, table: DocTable, cube_codes: Iterable[int], flt: SearchFilter, now: float
    ) -> FilterMask:
        codes = tuple(sorted(set(cube_codes)))
        key = (codes, _filter_key(flt))
        cached = self._masks.get(key)
        if cached is not None and cached.version == table.version and now < cached.valid_until:
            return cached
        mask = allowed_mask(table, codes, flt, now)
        # The mask stays right until the first allowed memory expires.
        valid_until = float(table.expires[mask].min(initial=NEVER))
        if len(self._masks) >= self._size:
            self._masks.clear()
        fresh = self._masks[key] = FilterMask(mask, table, valid_until)
        return fresh


def _filter_key(flt: SearchFilter) -> tuple:
    return (
        flt.tags_any,
        flt.tags_all,
        flt.states,
        tuple(sorted(flt.metadata.items())),
        flt.created_after,
        flt.created_before,
        flt.updated_after,
        flt.updated_before,
    )


def allowed_mask(
    table: DocTable, cube_codes: Iterable[int], flt: SearchFilter, now: float
) -> np.ndarray:
    """Boolean mask over ``table``'s slots: in one of the cubes, passing ``flt``, unexpired."""
    codes = list(cube_codes)
    if len(codes) == 1:
        mask = table.cube == codes[0]
    else:
        mask = np.isin(table.cube, np.asarray(codes, dtype=np.int32))
    if set(flt.states) != set(STATES):
        wanted = np.zeros(len(STATES), dtype=bool)
        wanted[[STATE_CODE[s] for s in flt.states]] = True
        mask &= wanted[table.state]
    mask &= table.expires > now
    if flt.created_after is not None:
        mask &= table.created > flt.created_after
    if flt.created_before is not None:
        mask &= table.created < flt.created_before
    if flt.updated_after is not None:
        mask &= table.updated > flt.updated_after
    if flt.updated_before is not None:
        mask &= table.updated < flt.updated_before
    if flt.tags_any:
        mask &= _slot_mask(table, set().union(*(table.tag_slots(t) for t in flt.tags_any)))
    for tag in flt.tags_all:
        mask &= _slot_mask(table, table.tag_slots(tag))
    for name, value in flt.metadata.items():
        mask &= _slot_mask(table, table.meta_slots(name, value))
    return mask


def _slot_mask(table: DocTable, slots: set[int]) -> np.ndarray:
    m = np.zeros(table.capacity, dtype=bool)
    if slots:
        m[np.fromiter(slots, dtype=np.int64, count=len(slots))] = True
    return m
