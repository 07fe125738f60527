"""Recall of the HNSW index on real text embeddings: every LoCoMo turn embedded
with the default embedder (all-MiniLM-L6-v2), searched with held-out turns as
queries, against exact NumPy search."""

from __future__ import annotations

import numpy as np
import pytest
from memosd._native import HnswIndex, IdFilter

pytestmark = pytest.mark.slow


def exact_cosine(data: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    d = data / np.linalg.norm(data, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return ids[np.argsort(-(q @ d.T), axis=1)[:, :k]]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


@pytest.fixture(scope="module")
def split(locomo_embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every 10th turn is a query; the others are indexed."""
    mask = np.arange(len(locomo_embeddings)) % 10 == 0
    return locomo_embeddings[~mask], locomo_embeddings[mask]


@pytest.fixture(scope="module")
def index(split: tuple[np.ndarray, np.ndarray]) -> HnswIndex:
    data, _ = split
    index = HnswIndex(dim=data.shape[1], metric="cosine", m=16, ef_construction=200)
    index.add(np.arange(len(data), dtype=np.uint64), data)
    return index


def test_there_are_thousands_of_real_turns(locomo_embeddings: np.ndarray) -> None:
    assert locomo_embeddings.shape[0] > 2_000 and locomo_embeddings.shape[1] == 384


def test_recall_at_10_on_locomo_embeddings(
    index: HnswIndex, split: tuple[np.ndarray, np.ndarray]
) -> None:
    data, queries = split
    truth = exact_cosine(data, np.arange(len(data)), queries, 10)
    ids, _ = index.search(queries, k=10, ef_search=64)
    assert recall(ids, truth) >= 0.95


@pytest.mark.parametrize("selectivity", [0.01, 0.1])
def test_filtered_recall_on_locomo_embeddings(
    index: HnswIndex, split: tuple[np.ndarray, np.ndarray], selectivity: float
) -> None:
    data, queries = split
    rng = np.random.default_rng(0)
    allowed = np.sort(rng.choice(len(data), int(len(data) * selectivity), replace=False))
    truth = exact_cosine(data[allowed], allowed, queries, 10)
    ids, _ = index.search(queries, k=10, ef_search=64, allowed=IdFilter(allowed.astype(np.uint64)))
    assert np.isin(ids, allowed).all()
    assert recall(ids, truth) >= 0.95
