"""Search latency while memories are being added, against the same searches idle.

    python bench/bench_search_during_ingest.py [--size 50000] [--ingest 20000]
        [--archived 0] [--out bench/out/search_during_ingest.json]

The daemon's write path in process, as in the daemon: a ``Store`` with a
``SearchEngine`` following it, filled with ``--size`` LoCoMo-derived memories (as
bench_daemon.py makes them, with precomputed vectors). One thread then searches
(VECTOR, top_k 10, a stored vector plus noise as the query, 2 ms apart, as the
daemon's event loop would between requests) for 5 s with nothing else running, and
again while a second thread adds ``--ingest`` more memories in batches of 1,000 (an
AddMemories call each: the graph inserts, hidden, on the engine's linking thread
while the store commits the batch and the doc table and BM25 take its heads; then
the reveal). A search shares the engine's lock with the ingest, and the graph's
lock while an insert stores its rows; what it waits for shows in the tail. Prints
both rows and their ratio. With ``--archived N`` the first N memories are archived
before the searches, so that the default filter (active memories only) leaves them
out: each search is then a filtered one, and each batch added changes the filter.

Then the same for writes and a snapshot of the index (every 300 s in the daemon):
AddMemories calls of 50 memories one after another, with nothing else running and
while ``SearchEngine.snapshot`` writes the graph that the ingest changed. A write
waits while the snapshot copies the graph, not while it writes the files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daemon import base_vectors, corpus, memory_text, perturbed
from memosd.embedder import Embedder
from memosd.search import SearchEngine, SearchFilter, SearchQuery
from memosd.store import MemoryDraft, MemoryRecord, Store

BATCH = 1000


def timed_until(
    call: Callable[[int], object], stop: Callable[[], bool], pause: float = 0.0
) -> np.ndarray:
    """Milliseconds of each ``call(i)`` (i = 0, 1, ...) made until ``stop()``, with
    ``pause`` seconds between calls."""
    out: list[float] = []
    while not stop():
        started = time.perf_counter()
        call(len(out))
        out.append(time.perf_counter() - started)
        time.sleep(pause)
    return np.array(out) * 1e3


def archived(head: MemoryRecord, _read: object) -> MemoryRecord:
    """The next version of ``head``, archived."""
    return dataclasses.replace(head, state="ARCHIVED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--locomo", type=Path, default=Path("../shared/data/locomo"))
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--ingest", type=int, default=20_000)
    parser.add_argument("--archived", type=int, default=0, help="memories archived first")
    parser.add_argument("--out", type=Path, default=Path("bench/out/search_during_ingest.json"))
    args = parser.parse_args()
    turns, _ = corpus(args.locomo)
    embedder = Embedder.default()
    base = base_vectors(embedder, [t["content"] for t in turns], args.out.parent)
    total = args.size + args.ingest
    vectors = perturbed(base, total, np.random.default_rng(7))
    queries = perturbed(vectors[: args.size], 2000, np.random.default_rng(1))
    drafts = [MemoryDraft(content=memory_text(turns, i)) for i in range(total)]

    with tempfile.TemporaryDirectory(prefix="memosd-bench-") as tmp:
        store = Store(Path(tmp) / "store")
        engine = SearchEngine(Path(tmp) / "index", store, embedder)
        engine.open()
        engine.follow()
        cube = store.create_cube("bench", time.time()).id

        def add(lo: int, hi: int) -> list[str]:
            """Ids of the memories added."""
            ids: list[str] = []
            for s in range(lo, hi, BATCH):
                e = min(s + BATCH, hi)
                added = store.add_memories(cube, drafts[s:e], vectors[s:e], time.time())
                ids.extend(rec.id for rec in added)
            return ids

        def search(i: int) -> None:
            query = SearchQuery((cube,), "q", 10, "VECTOR", SearchFilter())
            engine.search_embedded(query, queries[i % len(queries)])

        def searches(stop: Callable[[], bool]) -> np.ndarray:
            # 2 ms apart, as the daemon's event loop would between requests.
            return timed_until(search, stop, pause=0.002)

        def small_writes(stop: Callable[[], bool]) -> np.ndarray:
            """AddMemories calls of 50 memories, one after another."""
            return timed_until(
                lambda _: store.add_memories(cube, drafts[:50], vectors[:50], time.time()), stop
            )

        print(f"filling {args.size:,} memories ...", flush=True)
        filled = add(0, args.size)
        for memory_id in filled[: args.archived]:
            store.commit_version(cube, memory_id, archived, time.time())
        end = time.monotonic() + 5
        idle = searches(lambda: time.monotonic() > end)
        done = threading.Event()

        def ingest() -> None:
            try:
                add(args.size, total)
            finally:
                done.set()

        started = time.perf_counter()
        writer = threading.Thread(target=ingest)
        writer.start()
        busy = searches(done.is_set)
        writer.join()
        rate = args.ingest / (time.perf_counter() - started)

        engine.snapshot()  # from here on, only what the writes below change is due
        end = time.monotonic() + 3
        idle_writes = small_writes(lambda: time.monotonic() > end)
        add(0, BATCH)  # a graph to save
        snapshot_s: list[float] = []
        snapshot_done = threading.Event()

        def snapshot() -> None:
            started = time.perf_counter()
            engine.snapshot()
            snapshot_s.append(time.perf_counter() - started)
            snapshot_done.set()

        saver = threading.Thread(target=snapshot)
        saver.start()
        snapshot_writes = small_writes(snapshot_done.is_set)
        saver.join()
        store.close()

    rows = {"idle": idle, "during ingest": busy}
    stats = {
        name: {
            "n": len(ms),
            "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()),
        }
        for name, ms in rows.items()
    }
    print(f"\n{'searches':>14} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, s in stats.items():
        print(f"{name:>14} {s['n']:>6} {s['p50']:>8.2f} {s['p99']:>8.2f} {s['max']:>8.1f}")
    ratio = {k: stats["during ingest"][k] / stats["idle"][k] for k in ("p50", "p99", "max")}
    print(f"{'ratio':>14} {'':>6} {ratio['p50']:>8.2f} {ratio['p99']:>8.2f} {ratio['max']:>8.1f}")
    print(f"ingest of {args.ingest:,} memories beside the searches: {rate:,.0f}/s")
    writes = {
        name: {"n": len(ms), "p50": float(np.percentile(ms, 50)), "max": float(ms.max())}
        for name, ms in {"idle": idle_writes, "during snapshot": snapshot_writes}.items()
    }
    print(f"\n{'writes of 50':>15} {'n':>6} {'p50 ms':>8} {'max ms':>8}")
    for name, w in writes.items():
        print(f"{name:>15} {w['n']:>6} {w['p50']:>8.1f} {w['max']:>8.1f}")
    slowest = writes["during snapshot"]["max"] / writes["idle"]["max"]
    print(f"{'ratio':>15} {'':>6} {'':>8} {slowest:>8.1f}")
    print(f"snapshot of {total:,} memories beside the writes: {snapshot_s[0]:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "archived": args.archived,
        "searches": stats,
        "ingest_per_s": rate,
        "writes": writes,
        "snapshot_s": snapshot_s[0],
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
