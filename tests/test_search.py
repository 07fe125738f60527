"""SearchEngine over a real LMDB store and real HNSW graphs.

Vectors here come from a deterministic bag-of-words hashing embedder, so the
engine's logic (filters inside the index, freshness, snapshots, catch-up) is
tested without loading torch; tests/test_embedder.py covers the real model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import select
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lmdb
import numpy as np
import pytest
from memosd._native import IdFilter
from memosd.config import LimitsConfig
from memosd.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from memosd.ops.access import AccessTracker
from memosd.ops.search import Search
from memosd.query_encoder import ThreadedQueryEncoder
from memosd.search import SearchEngine, SearchFilter, SearchQuery
from memosd.search.doctable import DocTable
from memosd.search.filter import MaskCache
from memosd.search.lexical import tokenize
from memosd.search.vector import CubeImage, CubeVectors
from memosd.store import MemoryDraft, MemoryRecord, Store
from memosd.store.transaction import WriteTxn

DIM = 64


class HashingEmbedder:
    """Sum of one fixed random unit vector per token: texts sharing words are close."""

    dim = DIM

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            for tok in tokenize(text) or ["<empty>"]:
                seed = int.from_bytes(hashlib.sha256(tok.encode()).digest()[:8], "little")
                out[i] += np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
            out[i] /= np.linalg.norm(out[i])
        return out

    encode_queries = encode

    def native_query_encoder(self, max_batch: int) -> None:
        return None  # searches embed in memosd.query_encoder's Python thread


class World:
    """A store wired to an engine the way the daemon wires them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.embedder = HashingEmbedder()
        self.store = Store(root / "store")
        self.engine = self._engine()

    def _engine(self) -> SearchEngine:
        engine = SearchEngine(self.root / "index", self.store, self.embedder)  # type: ignore[arg-type]
        engine.open()
        engine.follow()
        return engine

    def reopen(self, snapshot: bool = True) -> None:
        if snapshot:
            self.engine.snapshot()
        self.store.close()
        self.store = Store(self.root / "store")
        self.engine = self._engine()

    def cube(self, name: str) -> str:
        return self.store.create_cube(name, time.time()).id

    def add(self, cube_id: str, texts: Sequence[str], **draft: object) -> list[MemoryRecord]:
        drafts = [MemoryDraft(content=t, **draft) for t in texts]  # type: ignore[arg-type]
        return self.store.add_memories(cube_id, drafts, self.embedder.encode(texts), time.time())

    def update(self, rec: MemoryRecord, **changes: object) -> MemoryRecord:
        content = changes.get("content")
        vector = None if content is None else self.embedder.encode([str(content)])[0]
        return self.store.commit_version(
            rec.cube_id,
            rec.id,
            lambda head, _read: dataclasses.replace(head, **changes),
            time.time(),
            vector=vector,
        )

    def search(self, cube_ids: Sequence[str] | str, query: str, **kw: object) -> list[str]:
        if isinstance(cube_ids, str):
            cube_ids = [cube_ids]
        hits = self.engine.search(SearchQuery(tuple(cube_ids), query, **kw))  # type: ignore[arg-type]
        return [rec.content for rec, _ in hits]


@pytest.fixture
def world(tmp_path: Path):
    w = World(tmp_path)
    yield w
    w.store.close()


FRUIT = [
    "apples are red and sweet",
    "bananas are yellow and long",
    "a cherry is small and red",
    "grapes grow in bunches on vines",
    "lemons are sour and yellow",
]


@pytest.mark.parametrize("mode", ["VECTOR", "LEXICAL", "HYBRID"])
def test_every_mode_finds_the_matching_memory(world: World, mode: str) -> None:
    cube = world.cube("fruit")
    world.add(cube, FRUIT)
    assert world.search(cube, "grapes vines", mode=mode, top_k=1) == [FRUIT[3]]
    assert len(world.search(cube, "yellow", mode=mode, top_k=10)) >= 2


def test_scores_are_ordered_and_records_complete(world: World) -> None:
    cube = world.cube("fruit")
    added = world.add(cube, FRUIT, tags=("food",))
    hits = world.engine.search(SearchQuery((cube,), "red sweet apples", top_k=3))
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    assert hits[0][0] == added[0]


def test_search_spans_cubes_and_isolates_them(world: World) -> None:
    a, b = world.cube("a"), world.cube("b")
    world.add(a, ["the red apple"])
    world.add(b, ["the red cherry"])
    for mode in ("VECTOR", "LEXICAL", "HYBRID"):
        assert world.search(a, "red", mode=mode) == ["the red apple"]
        assert sorted(world.search([a, b], "red", mode=mode)) == ["the red apple", "the red cherry"]


def test_filters_apply_inside_the_index(world: World) -> None:
    cube = world.cube("c")
    # 300 near-identical decoys and one match far from the query: a post-filter
    # over the top candidates would lose it; an in-index filter must not.
    world.add(cube, [f"red apple number {i}" for i in range(300)], tags=("decoy",))
    world.add(cube, ["green pear"], tags=("keep", "fruit"), metadata={"kind": "pear"})
    for mode in ("VECTOR", "HYBRID"):
        assert world.search(
            cube, "red apple", mode=mode, filter=SearchFilter(tags_any=("keep",))
        ) == ["green pear"]
    flt = SearchFilter(tags_all=("keep", "fruit"), metadata={"kind": "pear"})
    assert world.search(cube, "pear", mode="LEXICAL", filter=flt) == ["green pear"]
    assert world.search(cube, "pear", filter=SearchFilter(metadata={"kind": "apple"})) == []
    assert world.search(cube, "pear", filter=SearchFilter(tags_all=("keep", "decoy"))) == []


def test_state_and_time_filters(world: World) -> None:
    cube = world.cube("c")
    old, new = world.add(cube, ["old red note", "new red note"])
    t = time.time()
    world.update(old, state="ARCHIVED")
    assert world.search(cube, "red note") == ["new red note"]
    assert world.search(cube, "red note", filter=SearchFilter(states=("ARCHIVED",))) == [
        "old red note"
    ]
    both = SearchFilter(states=("ACTIVE", "ARCHIVED"))
    assert sorted(world.search(cube, "red note", filter=both)) == ["new red note", "old red note"]
    assert world.search(
        cube, "red", filter=SearchFilter(states=("ACTIVE", "ARCHIVED"), updated_after=t)
    ) == ["old red note"]
    assert world.search(cube, "red", filter=SearchFilter(created_before=new.created_at)) == []
    assert world.search(cube, "red", filter=SearchFilter(created_after=t)) == []


def test_expired_memories_are_never_returned(world: World) -> None:
    cube = world.cube("c")
    world.add(cube, ["short lived red note"], expires_at=time.time() + 0.3)
    world.add(cube, ["lasting red note"])
    assert len(world.search(cube, "red note")) == 2
    time.sleep(0.35)  # expired, not yet swept: still ACTIVE in the store
    for mode in ("VECTOR", "LEXICAL", "HYBRID"):
        assert world.search(cube, "short lived red note", mode=mode) == ["lasting red note"]
        everything = SearchFilter(states=("ACTIVE", "EXPIRED"))
        assert world.search(cube, "short lived red note", mode=mode, filter=everything) == [
            "lasting red note"
        ]


def test_updates_deletes_and_purges_are_never_stale(world: World) -> None:
    cube = world.cube("c")
    rec, keep = world.add(cube, ["the blue whale", "a blue bird"])
    world.update(rec, content="the grey elephant")
    for mode in ("VECTOR", "LEXICAL", "HYBRID"):
        assert world.search(cube, "whale", mode=mode, top_k=5) != ["the blue whale"]
        assert "the grey elephant" in world.search(cube, "grey elephant", mode=mode)
    world.update(keep, state="DELETED")
    # The deleted memory is gone from every mode; only the other one remains.
    assert world.search(cube, "blue bird", mode="VECTOR") == ["the grey elephant"]
    assert world.search(cube, "blue bird", mode="LEXICAL") == []
    deleted = SearchFilter(states=("DELETED",))
    assert world.search(cube, "blue bird", mode="LEXICAL", filter=deleted) == ["a blue bird"]
    world.store.purge(cube, rec.id)
    assert world.search(cube, "grey elephant", filter=SearchFilter(states=tuple(["ACTIVE"]))) == []
    assert len(world.engine) == 1


def test_hits_are_the_current_heads_with_their_access_statistics(world: World) -> None:
    cube = world.cube("c")
    (rec,) = world.add(cube, ["the blue whale"], tags=("sea",))
    world.store.record_access({rec.key: (4, 123.0)})
    [(hit, _)] = world.engine.search(SearchQuery((cube,), "whale", mode="LEXICAL"))
    assert (hit.access_count, hit.last_access_at) == (4, 123.0)
    assert hit == world.store.get(cube, rec.id)
    world.update(rec, tags=("land",))
    [(hit, _)] = world.engine.search(SearchQuery((cube,), "whale", mode="VECTOR"))
    assert (hit.tags, hit.version, hit.access_count) == (("land",), 2, 4)


@pytest.mark.parametrize("mode", ["VECTOR", "LEXICAL", "HYBRID"])
def test_writes_between_plan_and_finish_are_never_stale(world: World, mode: str) -> None:
    """The daemon plans a search (filter, lexical ranking) while its query embeds;
    what changed before the vector came back is what the hits show."""
    cube = world.cube("c")
    changed, deleted, purged = world.add(cube, ["blue whale", "blue whale calf", "blue whales"])
    query = SearchQuery((cube,), "blue whale", top_k=10, mode=mode)
    plan = world.engine.plan(query)
    world.update(changed, content="blue whale song", tags=("sea",))
    world.update(deleted, state="DELETED")
    world.store.purge(cube, purged.id)
    vector = None if mode == "LEXICAL" else world.embedder.encode([query.query])[0]
    hits = world.engine.finish(plan, vector)
    assert [(rec.id, rec.content, rec.tags) for rec, _ in hits] == [
        (changed.id, "blue whale song", ("sea",))
    ]


def test_stale_apply_is_ignored(world: World) -> None:
    cube = world.cube("c")
    (v1,) = world.add(cube, ["first words"])
    world.update(v1, content="second words")
    world.engine.apply(1, [v1])  # a late call with the older head
    assert world.search(cube, "first", mode="LEXICAL") == []
    assert world.search(cube, "second", mode="LEXICAL") == ["second words"]


def test_remove_cube(world: World) -> None:
    a, b = world.cube("a"), world.cube("b")
    world.add(a, ["red apple"])
    world.add(b, ["red cherry"])
    world.store.delete_cube(a)
    world.engine.remove_cube(a)
    with pytest.raises(NotFoundError):
        world.search(a, "red")
    assert world.search(b, "red") == ["red cherry"]


def test_snapshot_round_trip_and_catch_up(world: World) -> None:
    cube = world.cube("c")
    recs = world.add(cube, [f"memory about topic {i} and color {i % 7}" for i in range(200)])
    before = {m: world.search(cube, "topic 17 color 3", mode=m) for m in ("VECTOR", "LEXICAL")}
    world.engine.snapshot()
    # Changes after the snapshot, made while no engine listens (as after a crash).
    world.store._listeners.clear()
    world.update(recs[0], content="brand new text about zebras")
    world.store.purge(cube, recs[1].id)
    world.add(cube, ["late arrival about giraffes"])
    world.reopen(snapshot=False)
    assert world.search(cube, "zebras", top_k=1) == ["brand new text about zebras"]
    assert world.search(cube, "giraffes", mode="VECTOR", top_k=1) == ["late arrival about giraffes"]
    assert len(world.engine) == 200
    after = {m: world.search(cube, "topic 17 color 3", mode=m) for m in ("VECTOR", "LEXICAL")}
    # Many texts tie on "topic" and "color"; the one naming 17 leads, and nothing
    # changed after the snapshot comes back with its old content.
    assert after["LEXICAL"][0] == before["LEXICAL"][0] == recs[17].content
    assert not {recs[0].content, recs[1].content} & set(after["LEXICAL"] + after["VECTOR"])
    assert after["VECTOR"][:3] == before["VECTOR"][:3]


def test_snapshot_reads_no_heads_the_engine_has_taken(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cube = world.cube("c")
    world.add(cube, [f"memory {i}" for i in range(50)])
    assert world.engine.seq == world.store.seq  # every commit taken as it happened
    reads: list[int] = []
    head_by_key = world.store.head_by_key
    monkeypatch.setattr(
        world.store, "head_by_key", lambda key: reads.append(key) or head_by_key(key)
    )
    world.engine.snapshot()
    assert reads == []


def test_snapshot_catches_up_after_a_commit_failed_to_apply(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cube = world.cube("c")
    world.add(cube, ["first words"])
    taken = world.engine.seq
    with monkeypatch.context() as patch:
        patch.setattr(CubeVectors, "reveal", lambda graph, keys: 1 / 0)
        world.add(cube, ["zebras at noon"])  # durable; its listener failed
    world.add(cube, ["giraffes at dusk"])
    assert world.engine.seq == taken  # behind: a later commit does not move it on
    assert world.search(cube, "zebras", mode="VECTOR", top_k=1) != ["zebras at noon"]
    assert graph_rows(world, cube) == (2, 0), "the failed commit's rows were dropped"
    world.engine.snapshot()
    assert world.engine.seq == world.store.seq
    assert world.search(cube, "zebras", mode="VECTOR", top_k=1) == ["zebras at noon"]
    assert world.search(cube, "giraffes", mode="VECTOR", top_k=1) == ["giraffes at dusk"]


def graph_rows(world: World, cube_id: str) -> tuple[int, int]:
    """(rows searches may return, rows linked but hidden) of a cube's graph."""
    graph = world.engine._cubes[cube_id]
    return len(graph.keys), len(graph.index) - len(graph.keys)


def test_new_memories_are_linked_while_their_batch_commits_and_hidden_till_then(
    world: World,
) -> None:
    cube = world.cube("c")
    world.add(cube, FRUIT[:4])
    [prepare] = world.store._preparers
    seen = []

    def look(cube_id: str, keys: range, vectors: np.ndarray) -> Callable[[], None]:
        undo = prepare(cube_id, keys, vectors)
        assert world.engine._prepared is not None
        world.engine._prepared.linked.result()  # linked, and the batch not committed yet
        found = world.search(cube, "ripe bananas", mode="VECTOR", top_k=4)
        seen.append((found, graph_rows(world, cube)))
        return undo

    world.store._preparers[0] = look
    world.add(cube, ["bananas are ripe", "ripe bananas are sweet"])
    [(found, rows)] = seen
    # Not returned, nor taking the place of a committed memory.
    assert sorted(found) == sorted(FRUIT[:4]) and rows == (4, 2)
    assert world.search(cube, "ripe bananas", mode="VECTOR", top_k=2) == [
        "bananas are ripe",
        "ripe bananas are sweet",
    ]
    assert graph_rows(world, cube) == (6, 0)


class SearchBeforeReveal:
    """Records what each graph search is restricted to (its ``allowed``), and runs
    ``search`` just before each reveal of linked rows, keeping its hits."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, search: Callable[[], list[str]]) -> None:
        self.allowed: list[object] = []
        self.seen: list[list[str]] = []
        graph_search, reveal = CubeVectors.search, CubeVectors.reveal

        def recorded(graph: CubeVectors, query: np.ndarray, k: int, allowed: object) -> object:
            self.allowed.append(allowed)
            return graph_search(graph, query, k, allowed)  # type: ignore[arg-type]

        def look_first(graph: CubeVectors, keys: list[int]) -> None:
            self.seen.append(search())
            reveal(graph, keys)

        monkeypatch.setattr(CubeVectors, "search", recorded)
        monkeypatch.setattr(CubeVectors, "reveal", look_first)


def test_a_search_before_a_batch_is_revealed_needs_no_key_list(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table holds the batch's heads before its graph rows are revealed; the
    graph then returns only keys the table holds, so a search that passes the whole
    table walks the graph unrestricted (a list of every key cost 2-3 ms at 100k)."""
    cube = world.cube("c")
    world.add(cube, FRUIT[:4])
    old = world.add(cube, ["plums are purple"])[0]
    watch = SearchBeforeReveal(
        monkeypatch, lambda: world.search(cube, "plums bananas", mode="VECTOR", top_k=3)
    )
    world.store.purge(cube, old.id)  # out of the graph, then out of the table
    world.add(cube, ["ripe bananas", "bananas and plums"])
    restricted = [allowed is not None for allowed in watch.allowed]
    assert restricted == [False]
    [found] = watch.seen  # neither the purged memory nor the hidden rows, and no fewer hits
    assert len(found) == 3 and set(found) <= set(FRUIT[:4])


def test_a_filtered_search_reuses_its_key_set_and_sees_rows_once_revealed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cube = world.cube("c")
    recs = world.add(cube, FRUIT[:4])
    world.update(recs[0], state="ARCHIVED")  # the default filter now leaves one out
    watch = SearchBeforeReveal(
        monkeypatch, lambda: world.search(cube, "ripe bananas", mode="VECTOR", top_k=1)
    )
    world.add(cube, ["ripe bananas"])
    watch.seen.append(world.search(cube, "ripe bananas", mode="VECTOR", top_k=1))
    # The same key set both times (the table did not change in between); the graph
    # changed, and the second search finds the revealed row.
    passed = watch.allowed
    assert len(passed) == 2 and passed[0] is passed[1] and passed[0] is not None
    assert watch.seen == [["bananas are yellow and long"], ["ripe bananas"]]


def test_a_filter_passing_most_of_a_cube_lists_what_it_leaves_out(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing every allowed key because one memory is archived cost 4 ms at 100k
    after each write; the filter lists the fewer of the two, and the allowed keys
    whenever the graph may hold a key the table lacks."""
    cube = world.cube("c")
    recs = world.add(cube, FRUIT[:4])
    world.update(recs[0], state="ARCHIVED")
    watch = SearchBeforeReveal(monkeypatch, lambda: [])

    def search(**kw: object) -> tuple[list[str], IdFilter]:
        found = world.search(cube, FRUIT[0], mode="VECTOR", top_k=4, **kw)
        allowed = watch.allowed[-1]
        assert isinstance(allowed, IdFilter)
        return found, allowed

    found, allowed = search()
    assert allowed.excluding and len(allowed) == 1
    assert sorted(found) == sorted(FRUIT[1:4])
    found, allowed = search(filter=SearchFilter(states=("ARCHIVED",)))
    assert not allowed.excluding and len(allowed) == 1
    assert found == [FRUIT[0]]
    monkeypatch.setattr(world.engine, "_behind", True)
    found, allowed = search()
    assert not allowed.excluding and len(allowed) == 3
    assert sorted(found) == sorted(FRUIT[1:4])


@pytest.mark.parametrize("failure", ["in the write", "on a retry after the map grew"])
def test_a_failed_batch_leaves_no_row_in_the_graph(
    world: World, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    cube = world.cube("c")
    world.add(cube, FRUIT[:4])
    put_cube = WriteTxn.put_cube
    calls = []

    def fail(w: WriteTxn, record: object) -> None:
        calls.append(w)
        if failure == "in the write" or len(calls) == 1:
            raise (
                RuntimeError("disk on fire") if failure == "in the write" else lmdb.MapFullError()
            )
        put_cube(w, record)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(WriteTxn, "put_cube", fail)
        patch.setattr(world.store._env, "_grow", lambda: None)
        if failure == "in the write":
            with pytest.raises(RuntimeError):
                world.add(cube, ["melons are big and green"])
            assert graph_rows(world, cube) == (4, 0)
        else:
            world.add(cube, ["melons are big and green"])
            assert len(calls) == 2 and graph_rows(world, cube) == (5, 0)
    # The keys of a failed batch are drawn again by the next one.
    world.add(cube, ["kiwis are green and fuzzy"])
    top = world.search(cube, "green melons kiwis", mode="VECTOR")
    assert "kiwis are green and fuzzy" in top
    assert ("melons are big and green" in top) == (failure != "in the write")


def test_purged_keys_are_not_kept_once_their_commit_is_taken(world: World) -> None:
    cube, dropped = world.cube("c"), world.cube("d")
    recs = world.add(cube, ["alpha", "beta", "gamma"])
    world.add(dropped, ["delta"])
    world.store.purge(cube, recs[0].id)
    world.store.delete_cube(dropped)
    world.engine.remove_cube(dropped)
    assert world.engine._purged == set()  # (it grew by every key ever purged)
    assert sorted(world.search(cube, "alpha beta gamma", mode="LEXICAL")) == ["beta", "gamma"]
    assert len(world.engine) == 2


class HeldWrites:
    """Holds every ``CubeImage.save`` of a snapshot until released, or fails them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        save = CubeImage.save

        def held(image: CubeImage, stem: Path) -> None:
            self.entered.set()
            assert self.release.wait(10)
            if fail:
                raise OSError("disk full")
            save(image, stem)

        monkeypatch.setattr(CubeImage, "save", held)

    def snapshot_in_background(self, engine: SearchEngine) -> threading.Thread:
        thread = threading.Thread(target=engine.snapshot)
        thread.start()
        assert self.entered.wait(10)
        return thread


def in_time(call: Callable[[], object], seconds: float = 10) -> None:
    """Run ``call`` on a thread; fail if it has not returned within ``seconds``."""
    thread = threading.Thread(target=call)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the call waited for the snapshot's files"


def test_writes_go_on_while_a_snapshot_writes_its_files(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cube = world.cube("c")
    world.add(cube, ["first words"])
    held = HeldWrites(monkeypatch)
    snapshot = held.snapshot_in_background(world.engine)
    in_time(lambda: world.add(cube, ["zebras written during the snapshot"]))
    assert world.search(cube, "zebras", mode="VECTOR", top_k=1) == [
        "zebras written during the snapshot"
    ]
    held.release.set()
    snapshot.join()
    # The snapshot holds the graph as it was copied, at the seq before the write,
    # so reopening from it catches the write up from the store.
    world.store._listeners.clear()
    world.reopen(snapshot=False)
    assert world.search(cube, "zebras", mode="VECTOR", top_k=1) == [
        "zebras written during the snapshot"
    ]


def test_a_failed_snapshot_keeps_the_last_one_and_retries_the_graph(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cube = world.cube("c")
    world.add(cube, ["first words"])
    world.engine.snapshot()
    manifest_before = (world.root / "index" / "manifest.json").read_text()
    world.add(cube, ["giraffes at dusk"])
    with monkeypatch.context() as patch:
        held = HeldWrites(patch, fail=True)
        held.release.set()
        with pytest.raises(OSError, match="disk full"):
            world.engine.snapshot()
    assert (world.root / "index" / "manifest.json").read_text() == manifest_before
    world.engine.snapshot()  # the graph is still due
    world.store._listeners.clear()
    world.reopen(snapshot=False)
    assert len(world.engine) == 2
    assert world.search(cube, "giraffes", mode="VECTOR", top_k=1) == ["giraffes at dusk"]
    graphs = {p.name for p in (world.root / "index").glob("*.hnsw")}
    assert len(graphs) == 1  # the failed snapshot's files were not kept


def test_a_cube_dropped_during_a_snapshot_stays_out_of_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone, kept = world.cube("gone"), world.cube("kept")
    world.add(gone, ["apples"])
    world.add(kept, ["cherries"])
    held = HeldWrites(monkeypatch)
    snapshot = held.snapshot_in_background(world.engine)
    world.store.delete_cube(gone)
    in_time(lambda: world.engine.remove_cube(gone))
    held.release.set()
    snapshot.join()
    cubes = json.loads((world.root / "index" / "manifest.json").read_text())["cubes"]
    assert list(cubes) == [kept]
    world.reopen(snapshot=False)
    assert world.search(kept, "cherries", mode="VECTOR", top_k=1) == ["cherries"]


@pytest.mark.parametrize("damage", ["manifest", "graph", "missing"])
def test_corrupt_or_missing_snapshot_rebuilds(world: World, damage: str) -> None:
    cube = world.cube("c")
    world.add(cube, ["alpha beta", "gamma delta", "epsilon zeta"])
    world.engine.snapshot()
    index = world.root / "index"
    if damage == "manifest":
        (index / "manifest.json").write_text("{not json")
    elif damage == "graph":
        graph = next(index.glob("*.hnsw"))
        graph.write_bytes(graph.read_bytes()[:40])
    else:
        for p in index.iterdir():
            p.unlink()
    world.reopen(snapshot=False)
    assert world.search(cube, "gamma delta", mode="VECTOR", top_k=1) == ["gamma delta"]


def test_bad_queries_name_the_field() -> None:
    cases = [
        (dict(cube_ids=(), query="q"), "cube_ids"),
        (dict(cube_ids=("c",), query="  "), "query"),
        (dict(cube_ids=("c",), query="q", top_k=0), "top_k"),
        (dict(cube_ids=("c",), query="q", mode="FUZZY"), "mode"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidArgumentError) as e:
            SearchQuery(**kwargs)  # type: ignore[arg-type]
        assert e.value.field == field
    with pytest.raises(InvalidArgumentError) as e:
        SearchFilter(states=("SLEEPING",))
    assert e.value.field == "filter.states"


def test_unknown_cube_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        world.search("nope", "anything")
    empty, full = world.cube("empty"), world.cube("full")
    world.add(full, ["the blue whale"])
    assert world.search([empty, full], "whale") == ["the blue whale"]
    world.store.delete_cube(full)
    with pytest.raises(NotFoundError, match=full):
        world.search([empty, full], "whale")
    assert world.search(empty, "whale") == []


def test_reopen_loads_the_snapshot_instead_of_rebuilding(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    cube = world.cube("c")
    world.add(cube, ["alpha beta", "gamma delta"])
    with caplog.at_level(logging.INFO, logger="memosd.search.engine"):
        world.reopen()
    assert "1 graphs loaded, 0 rebuilt" in caplog.text
    assert world.search(cube, "gamma delta", mode="VECTOR", top_k=1) == ["gamma delta"]


@pytest.mark.parametrize("mode", ["VECTOR", "LEXICAL", "HYBRID"])
def test_only_plaintext_memories_are_searchable(world: World, mode: str) -> None:
    cube = world.cube("kinds")
    world.add(cube, ["activation of the memories about red apples"], type="ACTIVATION")
    world.add(cube, ["apples are red and sweet"])
    assert world.search(cube, "red apples", mode=mode, top_k=5) == ["apples are red and sweet"]
    world.reopen(snapshot=False)  # the rebuild from the store skips them too
    assert world.search(cube, "red apples", mode=mode, top_k=5) == ["apples are red and sweet"]


def test_filter_masks_are_reused_only_while_the_table_and_clock_allow(world: World) -> None:
    cube = world.cube("c")
    now = time.time()
    (short,) = world.add(cube, ["short lived"], expires_at=now + 100)
    (lasting,) = world.add(cube, ["lasting"])
    table = DocTable()
    slots = [table.put(short), table.put(lasting)]
    code = table.cube_code(cube)
    assert code is not None
    cache = MaskCache()
    first = cache.get(table, [code], SearchFilter(), now)
    assert list(np.flatnonzero(first.mask)) == slots
    assert cache.get(table, [code], SearchFilter(), now + 50) is first
    # Another filter gets its own mask.
    archived = cache.get(table, [code], SearchFilter(states=("ARCHIVED",)), now)
    assert archived is not first and not archived.mask.any()
    # Past the first expiry the mask is recomputed without the expired memory.
    later = cache.get(table, [code], SearchFilter(), now + 101)
    assert list(np.flatnonzero(later.mask)) == [slots[1]]
    # Any change to the table invalidates it.
    (third,) = world.add(cube, ["third"])
    slots.append(table.put(third))
    fresh = cache.get(table, [code], SearchFilter(), now + 101)
    assert list(np.flatnonzero(fresh.mask)) == slots[1:]
    assert list(fresh.keys_in_cube(code)) == [lasting.key, third.key]
    # New access statistics keep the masks: no filter reads them.
    assert table.set_access(lasting.key, 4, 9.5)
    assert cache.get(table, [code], SearchFilter(), now + 101) is fresh
    held = table.record(lasting.key)
    assert held == dataclasses.replace(lasting, access_count=4, last_access_at=9.5)
    assert not table.set_access(10**9, 1, 1.0)  # not in the table


def test_concurrent_searches_get_their_own_hits_and_errors(world: World) -> None:
    cube = world.cube("c")
    world.add(cube, FRUIT)
    ops = Search(world.engine, AccessTracker(world.store), LimitsConfig())
    modes = ["VECTOR", "HYBRID", "HYBRID", "HYBRID", "LEXICAL"]

    async def searches() -> list:
        calls = [
            ops.search([cube], text, 1, mode, SearchFilter())
            for text, mode in zip(FRUIT, modes, strict=True)
        ]
        calls.append(ops.search(["0" * 32], "apples", 1, "HYBRID", SearchFilter()))
        calls.append(ops.search([""], "apples", 1, "HYBRID", SearchFilter()))
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(searches())
    assert [hits[0][0].content for hits in results[:5]] == FRUIT
    assert isinstance(results[5], NotFoundError)
    assert isinstance(results[6], InvalidArgumentError)
    # A later event loop takes the query queue over from the closed one.
    again = asyncio.run(ops.search([cube], FRUIT[2], 1, "VECTOR", SearchFilter()))
    assert again[0][0].content == FRUIT[2]
    ops.close()
    for mode in ("HYBRID", "LEXICAL"):
        with pytest.raises(FailedPreconditionError):
            asyncio.run(ops.search([cube], "apples", 1, mode, SearchFilter()))
    with pytest.raises(FailedPreconditionError):
        ops.search_blocking([cube], "apples", 1, "HYBRID", SearchFilter())


class HeldEncoder:
    """``encode_queries`` that records its batches and holds the first until released."""

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray]) -> None:
        self.encode = encode
        self.batches: list[list[str]] = []
        self.release = threading.Event()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        if len(self.batches) == 1:
            self.release.wait(10)
        return self.encode(texts)

    async def first_batch_started(self) -> None:
        deadline = time.monotonic() + 10
        while not self.batches and time.monotonic() < deadline:
            await asyncio.sleep(0.001)


def test_queries_waiting_for_the_embedder_go_through_it_together(world: World) -> None:
    cube = world.cube("c")
    world.add(cube, FRUIT)
    ops = Search(world.engine, AccessTracker(world.store), LimitsConfig())
    held = HeldEncoder(world.embedder.encode_queries)
    world.embedder.encode_queries = held  # type: ignore[method-assign]

    async def searches() -> tuple[list, list, list]:
        first = asyncio.ensure_future(ops.search([cube], FRUIT[0], 1, "VECTOR", SearchFilter()))
        await held.first_batch_started()
        queued = [
            asyncio.ensure_future(ops.search([cube], text, 1, "HYBRID", SearchFilter()))
            for text in FRUIT[1:4]
        ]
        # The event loop goes on serving while the embedder is busy: a LEXICAL
        # search needs no embedding and completes at once.
        lexical = await ops.search([cube], FRUIT[4], 1, "LEXICAL", SearchFilter())
        assert not first.done()
        held.release.set()
        return await first, await asyncio.gather(*queued), lexical

    first, queued, lexical = asyncio.run(searches())
    assert first[0][0].content == FRUIT[0]
    assert [hits[0][0].content for hits in queued] == FRUIT[1:4]
    assert lexical[0][0].content == FRUIT[4]
    assert held.batches == [[FRUIT[0]], FRUIT[1:4]]
    ops.close()


def test_searches_past_the_pending_limit_are_refused_at_once(world: World) -> None:
    cube = world.cube("c")
    world.add(cube, FRUIT)
    ops = Search(world.engine, AccessTracker(world.store), LimitsConfig(max_pending_searches=2))
    held = HeldEncoder(world.embedder.encode_queries)
    world.embedder.encode_queries = held  # type: ignore[method-assign]

    async def flood() -> tuple[list, list, list]:
        waiting = [asyncio.ensure_future(ops.search([cube], FRUIT[0], 1, "HYBRID", SearchFilter()))]
        await held.first_batch_started()
        waiting.append(
            asyncio.ensure_future(ops.search([cube], FRUIT[1], 1, "VECTOR", SearchFilter()))
        )
        await asyncio.sleep(0)  # the second one queues
        with pytest.raises(ResourceExhaustedError, match=r"limits\.max_pending_searches"):
            await ops.search([cube], FRUIT[2], 1, "HYBRID", SearchFilter())
        # A LEXICAL search waits for no embedding and is not counted.
        lexical = await ops.search([cube], FRUIT[3], 1, "LEXICAL", SearchFilter())
        held.release.set()
        served = await asyncio.gather(*waiting)
        later = await ops.search([cube], FRUIT[4], 1, "HYBRID", SearchFilter())
        return served, lexical, later

    served, lexical, later = asyncio.run(flood())
    assert [hits[0][0].content for hits in served] == FRUIT[:2]
    assert lexical[0][0].content == FRUIT[3]
    assert later[0][0].content == FRUIT[4]  # the count went back down
    ops.close()


def test_close_serves_what_is_queued(world: World) -> None:
    cube = world.cube("c")
    world.add(cube, FRUIT)
    ops = Search(world.engine, AccessTracker(world.store), LimitsConfig())
    held = HeldEncoder(world.embedder.encode_queries)
    world.embedder.encode_queries = held  # type: ignore[method-assign]

    async def close_while_queued() -> list:
        calls = [asyncio.ensure_future(ops.search([cube], FRUIT[0], 1, "HYBRID", SearchFilter()))]
        await held.first_batch_started()
        calls += [
            asyncio.ensure_future(ops.search([cube], text, 1, "HYBRID", SearchFilter()))
            for text in FRUIT[1:4]
        ]
        await asyncio.sleep(0.01)  # queued behind the held batch
        closing = asyncio.ensure_future(asyncio.to_thread(ops.close))
        await asyncio.sleep(0.01)
        held.release.set()
        await closing
        return await asyncio.gather(*calls)

    results = asyncio.run(close_while_queued())
    assert [hits[0][0].content for hits in results] == FRUIT[:4]


def test_the_threaded_query_encoder_signals_and_fails_a_batch_together() -> None:
    calls: list[int] = []

    def encode(texts: Sequence[str]) -> np.ndarray:
        calls.append(len(texts))
        if "boom" in texts:
            raise RuntimeError("model failure")
        return np.ones((len(texts), 2), dtype=np.float32)

    worker = ThreadedQueryEncoder(encode, max_batch=2)
    assert select.select([worker], [], [], 0)[0] == []
    worker.submit("a", "text")
    assert select.select([worker], [], [], 10)[0] == [worker]
    assert [(tag, list(v)) for tag, v in worker.take()] == [("a", [1.0, 1.0])]
    assert select.select([worker], [], [], 0)[0] == []  # take consumed the signal
    worker.close()
    with pytest.raises(ResourceExhaustedError):
        worker.submit("b", "text")
    failing = ThreadedQueryEncoder(encode, max_batch=2)
    with failing._lock:  # both queued before the worker can take either
        failing._waiting.extend([("x", "boom"), ("y", "fine")])
        failing._lock.notify()
    failing.close()
    results = failing.take()
    assert [tag for tag, _ in results] == ["x", "y"]
    assert all(isinstance(r, RuntimeError) for _, r in results)


def test_a_big_batch_is_indexed_a_chunk_at_a_time(world: World) -> None:
    """Searches run on the event loop and take the engine lock: indexing a big batch
    must let go of it now and then, not hold it for the whole batch."""
    cube = world.cube("c")
    lock = world.engine._lock
    holds: list[int] = []

    class CountingLock:
        def __enter__(self) -> None:
            lock.acquire()
            holds.append(1)

        def __exit__(self, *exc: object) -> None:
            lock.release()

    world.engine._lock = CountingLock()  # type: ignore[assignment]
    world.add(cube, [f"note number {i}" for i in range(300)])
    assert len(holds) >= 3  # 300 heads, at most 128 per hold
    world.engine._lock = lock
    assert world.search(cube, "note", mode="LEXICAL", top_k=500)[:1] and len(world.engine) == 300
