"""SearchEngine: the vector and lexical indexes of every cube, kept in step with the store.

Contract with the store side (memosd.store and the operation layer):
- after every committed write the store calls ``apply(seq, heads, removed_keys)``;
- before a batch of new memories commits, it calls ``prepare(cube_id, keys,
  vectors)``: the graph inserts, most of the cost of indexing a batch, start on a
  thread while the store writes and syncs, hidden from searches until ``apply``
  reveals them (or the write fails and they are dropped);
- ``snapshot()`` on graceful shutdown and periodically; ``open()`` at start.

Consistency. The doc table and the BM25 index are rebuilt from the store's
heads at ``open`` (a read of every head; cheap next to embedding). HNSW graphs
are expensive to build, so they are loaded from the last snapshot and
reconciled with the store: ids the store no longer has are deleted, missing
ones added, and those that changed after the snapshot's seq re-added. A missing
or corrupt snapshot means a rebuild from the stored vectors. ``apply`` ignores a
head older than the one it already holds, so a late call never brings back
stale content.

Hits are the doc table's heads: the store hands every committed head (access
statistics included) to ``apply`` under its write lock, before the write
returns, so the table holds the current head of every indexed memory and a
search needs no store read.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from memosd.errors import CorruptDataError, MemosError, NotFoundError
from memosd.search import fusion, manifest
from memosd.search.doctable import DocTable
from memosd.search.filter import MaskCache
from memosd.search.lexical import LexicalIndex
from memosd.search.query import SearchQuery
from memosd.search.vector import INSERT_BATCH, CubeVectors

if TYPE_CHECKING:
    from memosd._native import IdFilter
    from memosd.embedder import Embedder
    from memosd.store import MemoryRecord, Store

log = logging.getLogger(__name__)

Hits = list[tuple["MemoryRecord", float]]  # best first
# HYBRID fuses this many candidates from each ranking (at least top_k).
HYBRID_CANDIDATES = 50
T = TypeVar("T")
# Heads indexed per hold of the engine lock (about 2 ms of work).
_LOCK_CHUNK = 128
# Access statistics taken per hold of the engine lock (about 1.5 ms).
_ACCESS_CHUNK = 256


@dataclass(frozen=True)
class SearchPlan:
    """A search's part that needs no query vector (``SearchEngine.plan``)."""

    query: SearchQuery
    depth: int  # candidates taken from each ranking
    now: float  # the time the filter was evaluated at
    table_version: int  # the doc table's version then
    graphs: list[tuple[CubeVectors, IdFilter | None]]  # with the allowed keys, or None: all
    lexical: fusion.Ranking


@dataclass(frozen=True)
class _Prepared:
    """A batch of new memories whose vectors are being linked into their cube's graph,
    hidden, while the store commits it (``SearchEngine.prepare``)."""

    cube_id: str
    cube: CubeVectors
    keys: range
    linked: Future[None]


class SearchEngine:
    def __init__(self, directory: Path, store: Store, embedder: Embedder) -> None:
        self.directory = Path(directory)
        self.store = store
        self.embedder = embedder
        self._table = DocTable()
        self._lexical = LexicalIndex()
        self._masks = MaskCache()
        self._cubes: dict[str, CubeVectors] = {}
        self._saved: dict[str, str] = {}  # cube id -> file stem of its last saved graph
        self._dirty: set[str] = set()  # cubes whose graph changed since it was saved
        # Keys purged, or of a dropped cube, while a _take may run: heads it read before
        # the purge must not bring them back. Emptied as each _take ends: commits reach
        # the engine in order, so a later _take reads no head from before the purge.
        self._purged: set[int] = set()
        self._seq = 0  # every store change up to this seq is in the indexes
        # A commit that failed to apply leaves _seq where it was, until a snapshot
        # catches up from the store.
        self._behind = False
        self._lock = threading.Lock()  # doc table and lexical index
        # Graph writers (searches need no lock), apart from the linking of the prepared
        # batch: no one else writes its keys before ``apply`` takes it.
        self._vector_lock = threading.Lock()
        self._snapshot_lock = threading.Lock()
        self._linker = ThreadPoolExecutor(1, thread_name_prefix="memosd-link")
        self._prepared: _Prepared | None = None  # set and taken under the store's write lock

    # ---------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Load the snapshot (or rebuild) and catch up with the store."""
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        seq = self.store.seq
        with self._lock:
            for rec in self.store.iter_heads():
                if rec.type == "PLAINTEXT":
                    self._lexical.upsert(self._table.put(rec), rec.content)
        snap = self._read_manifest(seq)
        changed: set[int] = set()
        if snap is not None:
            changed = {key for _, key in self.store.changes_since(snap.seq)}
            for cube_id, stem in snap.cubes.items():
                try:
                    self._cubes[cube_id] = CubeVectors.load(self.directory / stem, self.dim)
                    self._saved[cube_id] = stem
                except (OSError, MemosError) as e:
                    log.warning("search index of cube %s unusable (%s); rebuilding it", cube_id, e)
        loaded = set(self._cubes)
        with self._vector_lock:
            for cube_id in {r.cube_id for r in self._table.records()} | loaded:
                self._reconcile(cube_id, changed)
        self._seq = seq
        log.info(
            "search index open at seq %d: %d memories, %d cubes (%d graphs loaded, %d rebuilt) "
            "in %.1fs",
            seq,
            len(self._table),
            len(self._cubes),
            len(loaded),
            len(set(self._cubes) - loaded),
            time.monotonic() - started,
        )

    def snapshot(self) -> None:
        """Persist the graphs with the store seq they reflect.

        The graphs changed since the last snapshot are copied under the graph writers'
        lock and written after it: at 100k memories the files took 0.4-1.2 s to write
        and sync, and every AddMemories waited for them (the store calls ``apply``
        under its write lock)."""
        with self._snapshot_lock:  # one at a time: each deletes the files the other lacks
            with self._vector_lock:
                seq = self.store.seq
                self._catch_up()
                self._behind = False
                self._seq = seq
                taken = {}  # cube id -> (graph, its new stem, its image)
                for i, (cube_id, cube) in enumerate(self._cubes.items()):
                    if cube_id in self._dirty or cube_id not in self._saved:
                        taken[cube_id] = (cube, f"s{seq}-{i}", cube.image())
                self._dirty.difference_update(taken)  # changed from now on: dirty again
            try:
                for _, stem, image in taken.values():
                    image.save(self.directory / stem)
            except BaseException:
                with self._vector_lock:
                    self._dirty.update(
                        c for c, (cube, _, _) in taken.items() if self._cubes.get(c) is cube
                    )
                raise
            with self._vector_lock:
                # A cube dropped (or dropped and created again) meanwhile keeps out of
                # this manifest: its image is of a graph that no longer exists.
                for cube_id, (cube, stem, _) in taken.items():
                    if self._cubes.get(cube_id) is cube:
                        self._saved[cube_id] = stem
                stems = {c: self._saved[c] for c in self._cubes if c in self._saved}
                manifest.write(
                    self.directory, manifest.Manifest(seq=seq, dim=self.dim, cubes=stems)
                )
                self._saved = stems
        log.info("search index snapshot at seq %d (%d cubes)", seq, len(stems))

    @property
    def dim(self) -> int:
        return self.embedder.dim

    @property
    def seq(self) -> int:
        return self._seq

    def __len__(self) -> int:
        return len(self._table)

    # ---------------------------------------------------------------- updates

    def follow(self) -> None:
        """Take every later commit of the store as it happens: heads, purges and access
        statistics. Call after open(), before the store takes writes."""
        self.store.subscribe(self.apply)
        self.store.subscribe_access(self.apply_access)
        self.store.subscribe_prepare(self.prepare)

    def prepare(self, cube_id: str, keys: range, vectors: np.ndarray) -> Callable[[], None]:
        """Start linking the vectors of a batch of new memories into the cube's graph,
        hidden from searches, while the store commits the batch; ``apply`` reveals
        them. Returns what drops them if the commit fails.

        At 100k memories the graph inserts were about 70% of an in-process ingest
        batch, and the store's encoding and commit most of the rest."""
        with self._vector_lock:
            cube = self._graph(cube_id)
        ids = np.arange(keys.start, keys.stop, dtype=np.uint64)
        linked = self._linker.submit(cube.link_hidden, ids, vectors)
        prepared = self._prepared = _Prepared(cube_id, cube, keys, linked)

        def undo() -> None:
            self._prepared = None
            with self._vector_lock:
                self._drop_prepared(prepared)

        return undo

    def apply(
        self, seq: int, records: Sequence[MemoryRecord], removed_keys: Sequence[int] = ()
    ) -> None:
        """Take the heads (any state) and purged keys of commit ``seq`` into the indexes.

        Commits arrive in order, so once one is in, every change up to its seq is in:
        the next snapshot catches up from there rather than from the last snapshot (a
        read of every head changed since, under this lock, which held writes up for
        seconds after a big ingest)."""
        prepared, self._prepared = self._prepared, None
        with self._vector_lock:
            try:
                self._take(records, removed_keys, prepared=prepared)
            except BaseException:
                self._behind = True
                if prepared is not None:
                    self._drop_prepared(prepared)
                raise
            if not self._behind:
                self._seq = max(self._seq, seq)

    def apply_access(self, totals: Mapping[int, tuple[int, float | None]]) -> None:
        """Take the new access statistics of a store flush into the heads held."""
        for chunk in _held_in_chunks(self._lock, totals.items(), _ACCESS_CHUNK):
            for key, (count, last_at) in chunk:
                self._table.set_access(key, count, last_at)

    def _take(
        self,
        heads: Iterable[MemoryRecord],
        removed: Sequence[int],
        redo: bool = False,
        prepared: _Prepared | None = None,
    ) -> None:
        """Index ``heads`` and forget ``removed`` (the caller holds _vector_lock).

        Only plaintext memories are searchable: activation and parametric items
        carry a description, not text to retrieve, so their heads count as removed.
        A head whose content the doc table already holds is not indexed again, unless
        ``redo``: after a failed call the table may hold a head whose text or vector
        never reached the indexes. Heads of the ``prepared`` batch are revealed in
        its graph rather than inserted.
        """
        try:
            self._take_heads(heads, removed, redo, prepared)
        finally:
            with self._lock:
                self._purged.clear()

    def _take_heads(
        self,
        heads: Iterable[MemoryRecord],
        removed: Sequence[int],
        redo: bool,
        prepared: _Prepared | None,
    ) -> None:
        needs_vector: list[MemoryRecord] = []
        # Out of the graphs before out of the table: a key a graph search can return
        # is always in the table (``plan`` relies on it), unless a _take failed.
        self._delete_vectors(removed)
        with self._lock:
            for key in removed:
                self._purged.add(key)
                self._forget(key)
        # Searches run on the event loop and take _lock: a big batch is indexed a
        # chunk at a time, so that no search (and no other call) waits for all of it.
        for chunk in _held_in_chunks(self._lock, heads, _LOCK_CHUNK):
            for rec in chunk:
                if rec.key in self._purged:
                    continue
                if rec.type != "PLAINTEXT":
                    self._forget(rec.key)
                    continue
                old = self._table.record(rec.key)
                if old is not None and old.version > rec.version:
                    continue  # a later head is already in
                slot = self._table.put(rec)
                if redo or old is None or old.content != rec.content:
                    self._lexical.upsert(slot, rec.content)
                    needs_vector.append(rec)
        if prepared is not None:
            needs_vector = self._reveal_prepared(prepared, needs_vector)
        self._add_vectors(needs_vector)

    def _reveal_prepared(
        self, prepared: _Prepared, records: list[MemoryRecord]
    ) -> list[MemoryRecord]:
        """Reveal those of ``records`` that ``prepared`` linked, drop the rest of its
        rows (memories that are not indexed), and return the records still to insert."""
        try:
            prepared.linked.result()
        except Exception:
            log.exception("linking keys %s ahead of their commit failed", prepared.keys)
            self._drop_prepared(prepared)
            return records
        if self._cubes.get(prepared.cube_id) is not prepared.cube:
            return records  # the cube was dropped meanwhile
        ahead = [r.key for r in records if r.cube_id == prepared.cube_id and r.key in prepared.keys]
        prepared.cube.reveal(ahead)
        prepared.cube.drop_hidden(prepared.keys)
        if ahead:
            self._dirty.add(prepared.cube_id)
        return [r for r in records if r.cube_id != prepared.cube_id or r.key not in prepared.keys]

    @staticmethod
    def _drop_prepared(prepared: _Prepared) -> None:
        """Wait for the linking of ``prepared`` to end and remove what it left hidden
        (the caller holds _vector_lock)."""
        prepared.linked.exception()  # waits; a failed linking's rows are dropped the same
        prepared.cube.drop_hidden(prepared.keys)

    def remove_cube(self, cube_id: str) -> None:
        """Drop every memory of ``cube_id`` from the indexes."""
        with self._lock:
            keys = self._table.keys_of_cube(cube_id)
            self._purged.update(keys)
            for key in keys:
                self._forget(key)
        with self._vector_lock:
            self._cubes.pop(cube_id, None)
            self._saved.pop(cube_id, None)
            self._dirty.discard(cube_id)

    def _forget(self, key: int) -> None:
        slot = self._table.remove(key)
        if slot is not None:
            self._lexical.remove(slot)

    def _delete_vectors(self, keys: Iterable[int]) -> None:
        keys = list(keys)
        if not keys:
            return
        for cube_id, cube in self._cubes.items():
            before = len(cube)
            cube.delete(keys)
            if len(cube) != before:
                self._dirty.add(cube_id)

    def _graph(self, cube_id: str) -> CubeVectors:
        """The graph of ``cube_id``, a new one if it has none (the caller holds
        _vector_lock)."""
        cube = self._cubes.get(cube_id)
        if cube is None:
            cube = self._cubes[cube_id] = CubeVectors(self.dim)
        return cube

    def _add_vectors(self, records: Iterable[MemoryRecord]) -> None:
        """Read the current vectors of ``records`` from the store into their cubes' graphs."""
        by_cube: dict[str, list[int]] = defaultdict(list)
        for rec in records:
            by_cube[rec.cube_id].append(rec.key)
        for cube_id, keys in by_cube.items():
            cube = self._graph(cube_id)
            for start in range(0, len(keys), INSERT_BATCH):
                found, vectors = self.store.vectors(keys[start : start + INSERT_BATCH])
                cube.add(found, vectors)
            self._dirty.add(cube_id)

    def _catch_up(self) -> None:
        """Index again every head changed after ``self._seq`` (the caller holds _vector_lock)."""
        keys = {key for _, key in self.store.changes_since(self._seq)}
        heads, removed = [], []
        for key in keys:
            head = self.store.head_by_key(key)
            if head is None:
                removed.append(key)
            else:
                heads.append(head)
        self._take(heads, removed, redo=True)

    def _reconcile(self, cube_id: str, changed: set[int]) -> None:
        """Make the cube's graph hold exactly the table's keys of that cube, current vectors."""
        want = set(self._table.keys_of_cube(cube_id))
        cube = self._cubes.get(cube_id)
        have = cube.keys if cube is not None else set()
        stale = have - want
        if cube is not None and stale:
            cube.delete(stale)
        missing = (want - have) | (want & changed)
        if not want:
            self._cubes.pop(cube_id, None)
            return
        if missing or stale:
            self._add_vectors(r for k in missing if (r := self._table.record(k)) is not None)
            self._dirty.add(cube_id)

    def _read_manifest(self, store_seq: int) -> manifest.Manifest | None:
        try:
            snap = manifest.read(self.directory)
        except CorruptDataError as e:
            log.warning("search index manifest unusable (%s); rebuilding", e)
            return None
        if snap is None:
            log.info("no search index snapshot in %s; building from the store", self.directory)
            return None
        if snap.dim != self.dim or snap.seq > store_seq:
            log.warning(
                "search index snapshot (dim %d, seq %d) does not fit the store (dim %d, seq %d); "
                "rebuilding",
                snap.dim,
                snap.seq,
                self.dim,
                store_seq,
            )
            return None
        return snap

    # ---------------------------------------------------------------- search

    def search(self, query: SearchQuery) -> Hits:
        """The best ``top_k`` current heads for ``query`` with their scores, best first.

        Scores: VECTOR cosine similarity, LEXICAL BM25, HYBRID the fused score.
        """
        self.require_cubes(query.cube_ids)
        qvec = None
        if query.mode != "LEXICAL":
            qvec = self.embedder.encode_queries([query.query])[0]
        return self.search_embedded(query, qvec)

    def require_cubes(self, cube_ids: Sequence[str]) -> None:
        """Raise NotFoundError naming the first of ``cube_ids`` that does not exist.

        A cube with memories in the doc table exists (deleting a cube removes its
        memories from the table before it returns); only the others cost a store read.
        Read without ``_lock``: each read is one dict or list lookup (atomic under the
        GIL), and a cube seen holding memories existed at that moment."""
        unknown = {c for c in cube_ids if not self._table.cube_holds_memories(c)}
        if unknown:
            missing = unknown - self.store.existing_cubes(unknown)
            for cube_id in cube_ids:
                if cube_id in missing:
                    raise NotFoundError(f"cube {cube_id} not found")

    def search_embedded(self, query: SearchQuery, qvec: np.ndarray | None) -> Hits:
        """``search`` with the query's vector given (None for LEXICAL) and its cubes
        checked (``require_cubes``)."""
        return self.finish(self.plan(query), qvec)

    def plan(self, query: SearchQuery) -> SearchPlan:
        """What a search needs of the indexes besides its query vector: the graphs to
        search (with the filter's keys where it excludes some) and the lexical ranking.
        The daemon takes it while the query is being embedded; a memory changed
        meanwhile is caught by ``finish``, which takes every hit's head afresh."""
        depth = query.top_k
        if query.mode == "HYBRID":
            depth = max(HYBRID_CANDIDATES, query.top_k)
        now = time.time()
        graphs: list[tuple[CubeVectors, IdFilter | None]] = []
        lexical = _NO_HITS
        with self._lock:
            cubes = [
                (c, code) for c in query.cube_ids if (code := self._table.cube_code(c)) is not None
            ]
            allowed = self._masks.get(self._table, (code for _, code in cubes), query.filter, now)
            if query.mode != "LEXICAL":
                for cube_id, code in cubes:
                    graph = self._cubes.get(cube_id)
                    if graph is None:
                        continue
                    n = allowed.count_in_cube(code)
                    if n == 0:
                        continue
                    # Unless a commit failed to apply, every key the graph returns is
                    # in the table (new ones may not be in the graph yet): a filter that
                    # passes the whole table passes the graph, and one that leaves out
                    # a few keys may list just those.
                    complete = not self._behind
                    everything = n == self._table.cube_size(code) and (n == len(graph) or complete)
                    subset = None if everything else allowed.ids_in_cube(code, complete)
                    graphs.append((graph, subset))
            if query.mode != "VECTOR":
                slots, scores = self._lexical.search(query.query, depth, allowed.mask)
                lexical = (self._table.keys[slots], scores.astype(np.float64))
            version = self._table.version
        return SearchPlan(query, depth, now, version, graphs, lexical)

    def finish(self, plan: SearchPlan, qvec: np.ndarray | None) -> Hits:
        """The hits of a planned search, given its query vector (None for LEXICAL)."""
        query, depth = plan.query, plan.depth
        vector = _NO_HITS
        if qvec is not None and len(plan.graphs) == 1:
            graph, subset = plan.graphs[0]
            vector = graph.search(qvec, depth, subset)
        elif qvec is not None and plan.graphs:
            found = [graph.search(qvec, depth, subset) for graph, subset in plan.graphs]
            keys = np.concatenate([k for k, _ in found])
            scores = np.concatenate([s for _, s in found])
            best = np.argsort(-scores, kind="stable")[:depth]  # ties: cube order
            vector = (keys[best], scores[best])
        if query.mode == "VECTOR":
            ranked = vector
        elif query.mode == "LEXICAL":
            ranked = plan.lexical
        else:
            ranked = fusion.fuse(vector, plan.lexical)
        return self._current_heads(ranked, plan)

    def _current_heads(self, ranked: fusion.Ranking, plan: SearchPlan) -> Hits:
        """The head of each hit as the doc table holds it, until ``top_k`` pass the
        filter again (a head may have changed since the ranking)."""
        query = plan.query
        hits: Hits = []
        with self._lock:
            # While the table is as the plan saw it, every ranked key is one that the
            # filter's mask allowed at ``plan.now``: only a changed table is checked.
            recheck = self._table.version != plan.table_version
            for key, score in zip(ranked[0].tolist(), ranked[1].tolist(), strict=True):
                head = self._table.record(key)
                if head is None or head.cube_id not in query.cube_ids:
                    continue
                if not recheck or query.filter.matches(head, plan.now):
                    hits.append((head, score))
                    if len(hits) == query.top_k:
                        break
        return hits


# An empty ranking: a mode or cube with nothing to search.
_NO_HITS: fusion.Ranking = (np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float64))


def _held_in_chunks(lock: threading.Lock, items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size``, each yielded while holding ``lock``.

    Between two lists the GIL is let go: a thread waiting for ``lock`` (a search on
    the event loop) needs the GIL to take it once it is free, and this thread would
    otherwise keep the GIL and take the lock again, so that the search waited for
    every list."""
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        with lock:
            yield chunk
        time.sleep(0)
