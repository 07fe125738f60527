"""The Rust HNSW index (memosd._native.HnswIndex) against exact NumPy search on
clustered synthetic data: recall, filtering, deletion, persistence, bad input,
and concurrent use."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from memosd._native import MISSING_ID, HnswIndex, IdFilter
from memosd.errors import CorruptDataError, InvalidArgumentError
from memosd.search.lexical import tokenize

DIM = 48


def clustered(n: int, dim: int = DIM, seed: int = 0, clusters: int = 50) -> np.ndarray:
    """Gaussian blobs around random centres: the neighbourhood structure of embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (clusters, dim))
    points = centres[rng.integers(0, clusters, n)] + rng.normal(0.0, 0.35, (n, dim))
    return points.astype(np.float32)


def exact_neighbours(
    data: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, metric: str = "cosine"
) -> np.ndarray:
    """Ids of the exact k nearest rows of ``data`` by the index's distance."""
    if metric == "cosine":
        d = data / np.linalg.norm(data, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        dist = -(q @ d.T)
    elif metric == "ip":
        dist = -(queries @ data.T)
    else:
        dist = (queries**2).sum(1)[:, None] + (data**2).sum(1)[None, :] - 2 * queries @ data.T
    return ids[np.argsort(dist, axis=1)[:, :k]]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def build(data: np.ndarray, metric: str = "cosine", **kw: int) -> HnswIndex:
    index = HnswIndex(dim=data.shape[1], metric=metric, **kw)
    index.add(np.arange(len(data), dtype=np.uint64), data)
    return index


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(8_000)


@pytest.fixture(scope="module")
def index(data: np.ndarray) -> HnswIndex:
    return build(data)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(200, seed=1)


def test_recall_at_10_against_exact_search(
    index: HnswIndex, data: np.ndarray, queries: np.ndarray
) -> None:
    truth = exact_neighbours(data, np.arange(len(data)), queries, 10)
    ids, dist = index.search(queries, k=10, ef_search=128)
    assert ids.shape == dist.shape == (200, 10)
    assert ids.dtype == np.uint64 and dist.dtype == np.float32
    assert recall(ids, truth) >= 0.95
    assert np.all(np.diff(dist, axis=1) >= 0), "nearest first"
    assert len(index) == len(data)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_recall_for_the_other_metrics(metric: str) -> None:
    data = clustered(3_000, seed=2)
    queries = clustered(100, seed=3)
    ids, dist = build(data, metric).search(queries, k=10, ef_search=128)
    truth = exact_neighbours(data, np.arange(len(data)), queries, 10, metric)
    assert recall(ids, truth) >= 0.95
    if metric == "l2":  # squared L2, as hnswlib reports it
        nearest = data[ids[:, 0].astype(np.int64)]
        np.testing.assert_allclose(dist[:, 0], ((queries - nearest) ** 2).sum(1), rtol=1e-4)


def test_cosine_distance_is_one_minus_cosine(index: HnswIndex, data: np.ndarray) -> None:
    q = clustered(5, seed=4)
    ids, dist = index.search(q, k=3)
    rows = data[ids.astype(np.int64)]
    cos = (rows * q[:, None, :]).sum(-1) / (
        np.linalg.norm(rows, axis=-1) * np.linalg.norm(q, axis=-1)[:, None]
    )
    np.testing.assert_allclose(dist, 1 - cos, atol=1e-5)


def test_batch_search_equals_one_query_per_call(index: HnswIndex, queries: np.ndarray) -> None:
    batch_ids, batch_dist = index.search(queries[:20], k=10, ef_search=32)
    for i in range(20):
        ids, dist = index.search(queries[i : i + 1], k=10, ef_search=32)
        np.testing.assert_array_equal(ids[0], batch_ids[i])
        np.testing.assert_array_equal(dist[0], batch_dist[i])


@pytest.mark.parametrize("selectivity", [0.01, 0.1])
def test_filtered_recall(
    index: HnswIndex, data: np.ndarray, queries: np.ndarray, selectivity: float
) -> None:
    rng = np.random.default_rng(5)
    allowed = rng.choice(len(data), int(len(data) * selectivity), replace=False).astype(np.uint64)
    truth = exact_neighbours(data[allowed.astype(np.int64)], allowed, queries, 10)
    for restrict in (allowed, IdFilter(allowed)):
        ids, _ = index.search(queries, k=10, ef_search=64, allowed=restrict)
        assert np.isin(ids, allowed).all()
        assert recall(ids, truth) >= 0.95


def test_filter_applied_inside_the_graph_walk_keeps_recall_at_half_selectivity(
    index: HnswIndex, data: np.ndarray, queries: np.ndarray
) -> None:
    allowed = np.arange(0, len(data), 2, dtype=np.uint64)
    left_out = np.arange(1, len(data), 2, dtype=np.uint64)
    truth = exact_neighbours(data[::2], allowed, queries, 10)
    for restrict in (IdFilter(allowed), IdFilter(left_out, excluding=True)):
        assert len(restrict) == len(data) // 2
        ids, _ = index.search(queries, k=10, ef_search=64, allowed=restrict)
        assert np.isin(ids, allowed).all()
        assert recall(ids, truth) >= 0.95


def test_fewer_results_than_k_are_padded() -> None:
    empty = HnswIndex(dim=4)
    ids, dist = empty.search(np.ones((2, 4), np.float32), k=3)
    assert (ids == MISSING_ID).all() and np.isinf(dist).all()
    assert MISSING_ID == 2**64 - 1
    small = build(clustered(4, dim=4))
    ids, dist = small.search(np.ones((1, 4), np.float32), k=6)
    assert sorted(ids[0, :4].tolist()) == [0, 1, 2, 3]
    assert (ids[0, 4:] == MISSING_ID).all() and np.isinf(dist[0, 4:]).all()
    unknown = small.search(np.ones((1, 4), np.float32), k=2, allowed=np.array([99], np.uint64))
    assert (unknown[0] == MISSING_ID).all()


def test_deleted_ids_are_never_returned_and_slots_are_reused() -> None:
    data = clustered(4_000, seed=6)
    index = build(data)
    gone = np.arange(0, 4_000, 4, dtype=np.uint64)
    assert index.delete(gone) == len(gone)
    assert index.delete(gone) == 0
    assert len(index) == 3_000 and 0 not in index and 1 in index
    ids, _ = index.search(data, k=10, ef_search=32)
    assert not np.isin(ids, gone).any()
    live = np.setdiff1d(np.arange(4_000), gone.astype(np.int64))
    queries = clustered(100, seed=7)
    truth = exact_neighbours(data[live], live, queries, 10)
    assert recall(index.search(queries, k=10, ef_search=128)[0], truth) >= 0.95

    size = index.memory_bytes()
    fresh = clustered(1_000, seed=8)
    index.add(np.arange(10_000, 11_000, dtype=np.uint64), fresh)
    assert index.memory_bytes() - size < 1_000 * DIM, "the new vectors went into the freed slots"
    all_data = np.concatenate([data[live], fresh])
    all_ids = np.concatenate([live, np.arange(10_000, 11_000)])
    truth = exact_neighbours(all_data, all_ids, queries, 10)
    assert recall(index.search(queries, k=10, ef_search=128)[0], truth) >= 0.95


def test_re_adding_an_id_replaces_its_vector() -> None:
    data = clustered(1_000, seed=9)
    index = build(data)
    moved = data[500:501] + 0.01  # an outlier could be unreachable in any HNSW graph
    index.add(np.array([7], np.uint64), moved)
    assert len(index) == 1_000
    ids, dist = index.search(moved, k=1)
    assert ids[0, 0] == 7 and dist[0, 0] < 1e-5
    assert index.search(data[7:8], k=1)[0][0, 0] != 7


def test_hidden_rows_are_returned_only_once_revealed(tmp_path: Path) -> None:
    data = clustered(2_000, seed=11)
    index = build(data)
    fresh = clustered(200, seed=12)
    fresh_ids = np.arange(10_000, 10_200, dtype=np.uint64)
    index.add(fresh_ids, fresh, hidden=True)
    assert len(index) == 2_200 and 10_000 in index
    assert not np.isin(index.search(fresh, k=10)[0], fresh_ids).any()
    assert (index.search(fresh, k=10, allowed=fresh_ids)[0] == MISSING_ID).all()
    index.save(tmp_path / "index.hnsw")
    assert 10_000 not in HnswIndex.load(str(tmp_path / "index.hnsw")), "saved as deleted"

    assert index.reveal(fresh_ids[:100]) == 100
    assert index.reveal(fresh_ids[:100]) == 0
    ids = index.search(fresh, k=1)[0][:, 0]
    np.testing.assert_array_equal(ids[:100], fresh_ids[:100])
    assert not np.isin(ids[100:], fresh_ids[100:]).any()
    with pytest.raises(InvalidArgumentError) as e:
        index.reveal(np.array([1.0]))
    assert e.value.field == "ids"


def test_searches_go_on_while_hidden_rows_are_linked() -> None:
    data = clustered(2_000, seed=13)
    index = build(data)
    fresh_ids = np.arange(100_000, 115_000, dtype=np.uint64)
    adder = threading.Thread(
        target=index.add, args=(fresh_ids, clustered(15_000, seed=14)), kwargs={"hidden": True}
    )
    adder.start()
    while len(index) < 17_000:  # the rows are placed: the linking is under way
        time.sleep(0.001)
    found = index.search(data[:10], k=5)[0]
    linking = adder.is_alive()
    adder.join()
    assert linking, "the search waited for the whole insert"
    assert not np.isin(found, fresh_ids).any()


def test_save_and_load_give_identical_results(
    index: HnswIndex, queries: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "index.hnsw"
    index.save(path)
    loaded = HnswIndex.load(str(path))
    assert (loaded.dim, loaded.metric, loaded.m, loaded.ef_construction) == (DIM, "cosine", 16, 200)
    assert len(loaded) == len(index)
    before = index.search(queries, k=10, ef_search=40)
    after = loaded.search(queries, k=10, ef_search=40)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob("*.tmp")), "no temporary file left behind"


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "garbage"])
def test_damaged_files_raise_corrupt_data_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "index.hnsw"
    build(clustered(500, seed=10)).save(path)
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "flipped":
        raw[len(raw) // 3] ^= 0x10
    elif damage == "empty":
        raw = bytearray()
    else:
        raw = bytearray(b"not an index at all" * 10)
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptDataError):
        HnswIndex.load(path)


def test_missing_files_and_folders_raise_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        HnswIndex.load(tmp_path / "absent.hnsw")
    with pytest.raises(FileNotFoundError):
        build(clustered(10, seed=12)).save(tmp_path / "no-such-folder" / "index.hnsw")
    assert not list(tmp_path.iterdir())


def test_wrong_dtype_or_shape_raises_value_error_naming_the_field() -> None:
    index = HnswIndex(dim=384)
    ok_ids = np.arange(10, dtype=np.uint64)
    with pytest.raises(ValueError) as e:
        index.add(ok_ids, np.zeros((10, 384), np.float64))
    assert str(e.value) == (
        "vectors: expected float32 array of shape (n, 384), got float64 (10, 384)"
    )
    assert isinstance(e.value, InvalidArgumentError) and e.value.field == "vectors"
    cases = [
        ("ids", lambda: index.add(ok_ids.astype(np.int64), np.ones((10, 384), np.float32))),
        ("ids", lambda: index.add(ok_ids.reshape(2, 5), np.ones((10, 384), np.float32))),
        ("ids", lambda: index.add([1, 2], np.ones((2, 384), np.float32))),
        ("vectors", lambda: index.add(ok_ids, np.ones((10, 383), np.float32))),
        ("vectors", lambda: index.add(ok_ids, np.ones(384, np.float32))),
        ("vectors", lambda: index.add(ok_ids, np.ones((9, 384), np.float32))),
        ("vectors", lambda: index.add(ok_ids[:1], np.zeros((1, 384), np.float32))),
        ("vectors", lambda: index.add(ok_ids[:1], np.full((1, 384), np.nan, np.float32))),
        ("queries", lambda: index.search(np.ones((1, 384), np.float64))),
        ("queries", lambda: index.search(np.ones((1, 12), np.float32))),
        ("allowed", lambda: index.search(np.ones((1, 384), np.float32), allowed=[1, 2])),
        ("k", lambda: index.search(np.ones((1, 384), np.float32), k=0)),
        ("k", lambda: index.search(np.ones((1, 384), np.float32), k=2**21)),
        ("max_elements", lambda: HnswIndex(dim=4, max_elements=2**62)),
        ("ids", lambda: index.delete(np.array([1.0]))),
        ("ids", lambda: IdFilter(np.array([-1]))),
        ("metric", lambda: HnswIndex(dim=4, metric="hamming")),
        ("m", lambda: HnswIndex(dim=4, m=1)),
        ("dim", lambda: HnswIndex(dim=0)),
    ]
    for field, call in cases:
        with pytest.raises(InvalidArgumentError) as e:
            call()
        assert e.value.field == field, (field, str(e.value))
        assert isinstance(e.value, ValueError)
    assert len(index) == 0, "rejected input changed nothing"


def test_non_contiguous_arrays_are_accepted(data: np.ndarray) -> None:
    index = HnswIndex(dim=DIM)
    strided = np.asfortranarray(data[:200])
    index.add(np.arange(400, dtype=np.uint64)[::2], strided)
    ids, _ = index.search(np.asfortranarray(data[:5]), k=1)
    assert ids[:, 0].tolist() == [0, 2, 4, 6, 8]


def test_concurrent_searches_from_threads_match_serial_ones(
    index: HnswIndex, queries: np.ndarray
) -> None:
    expected = [index.search(queries[i : i + 10], k=10, ef_search=48) for i in range(0, 200, 10)]
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(offset, offset + 100):
                j = (i % 20) * 10
                ids, dist = index.search(queries[j : j + 10], k=10, ef_search=48)
                np.testing.assert_array_equal(ids, expected[i % 20][0])
                np.testing.assert_array_equal(dist, expected[i % 20][1])
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t * 7,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_searches_run_safely_while_another_thread_adds_and_deletes() -> None:
    data = clustered(3_000, seed=11)
    index = build(data[:1_000])
    stop = threading.Event()
    seen_bad: list[int] = []

    def searcher() -> None:
        while not stop.is_set():
            ids, _ = index.search(data[:20], k=5, ef_search=16)
            valid = (ids < 3_000) | (ids == MISSING_ID)
            if not valid.all():
                seen_bad.append(int(ids[~valid][0]))

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(1_000, 3_000, 250):
        index.add(np.arange(start, start + 250, dtype=np.uint64), data[start : start + 250])
        index.delete(np.arange(start - 1_000, start - 900, dtype=np.uint64))
    stop.set()
    for t in threads:
        t.join()
    assert not seen_bad
    assert len(index) == 3_000 - 800


def hashed_bag_of_words(text: str, dim: int = 64) -> np.ndarray:
    """The hashing embedder of the search tests: one seeded random vector per token, summed."""
    v = np.zeros(dim, np.float32)
    for token in tokenize(text):
        seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")
        v += np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_a_hub_vector_leaves_no_id_unreachable_after_a_delete_and_a_mixed_re_add() -> None:
    # One-character tokens are dropped, so the first ten texts embed to one vector (the
    # three shared words), nearer to every other text than those are to each other: the
    # neighbour heuristic alone links every node to that hub only.
    texts = [f"memory about topic {i} and color {i % 7}" for i in range(200)]
    index = HnswIndex(64, "cosine", 16, 200)
    index.add(np.arange(1, 201, dtype=np.uint64), np.stack([hashed_bag_of_words(t) for t in texts]))
    index.delete(np.array([2], dtype=np.uint64))
    late = ["late arrival about giraffes", "brand new text about zebras"]
    # A new id and a present one (id 1, in the first slot) reusing freed slots in one batch.
    index.add(np.array([201, 1], dtype=np.uint64), np.stack([hashed_bag_of_words(t) for t in late]))
    ids, _ = index.search(hashed_bag_of_words("giraffes")[None], k=200, ef_search=400)
    assert sorted(ids[0].tolist()) == [1, *range(3, 202)]
    assert ids[0][0] == 201
