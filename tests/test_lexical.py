"""BM25 index: tokenizer, scores against a plain reference, incremental updates, masks."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memosd.search.lexical import K1, B, LexicalIndex, tokenize


def test_tokenize_folds_case_drops_stop_words_and_plural_s() -> None:
    assert tokenize("The Cats sat on THE mat, with a Dog's bowl") == [
        "cat",
        "sat",
        "mat",
        "dog",
        "bowl",
    ]
    assert tokenize("class glass bus") == ["class", "glass", "bus"]
    assert tokenize("Straße ÉCOLE 2023") == ["strasse", "école", "2023"]
    assert tokenize("") == []


def reference_bm25(docs: dict[int, str], query: str) -> dict[int, float]:
    """Okapi BM25 written out term by term, the way textbooks state it."""
    toks = {slot: tokenize(text) for slot, text in docs.items()}
    n = len(docs)
    avg = sum(len(t) for t in toks.values()) / n
    scores = {}
    for slot, terms in toks.items():
        tf = Counter(terms)
        s = 0.0
        for q in set(tokenize(query)):
            df = sum(1 for t in toks.values() if q in t)
            if tf[q] == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            s += idf * tf[q] * (K1 + 1) / (tf[q] + K1 * (1 - B + B * len(terms) / avg))
        if s > 0:
            scores[slot] = s
    return scores


CORPUS = {
    0: "Caroline went to the LGBTQ support group yesterday",
    1: "Melanie painted a sunrise over the lake last year",
    2: "The support group met again; Caroline brought cookies for the group",
    3: "Kids love painting and swimming at the lake",
    4: "nothing relevant here at all",
}


def build(docs: dict[int, str]) -> LexicalIndex:
    idx = LexicalIndex()
    for slot, text in docs.items():
        idx.upsert(slot, text)
    return idx


@pytest.mark.parametrize("query", ["support group", "lake painting", "Caroline", "zebra"])
def test_scores_match_reference(query: str) -> None:
    slots, scores = build(CORPUS).search(query, k=10)
    ref = reference_bm25(CORPUS, query)
    assert dict(zip(slots.tolist(), scores.tolist(), strict=True)) == pytest.approx(ref, rel=1e-5)
    assert list(scores) == sorted(scores, reverse=True)


def test_top_k_and_mask() -> None:
    idx = build(CORPUS)
    slots, _ = idx.search("support group lake", k=2)
    assert len(slots) == 2
    mask = np.zeros(8, dtype=bool)
    mask[[1, 4]] = True
    slots, _ = idx.search("support group lake", k=10, mask=mask)
    assert slots.tolist() == [1]


def test_empty_index_and_stop_word_query() -> None:
    assert len(LexicalIndex().search("anything", k=5)[0]) == 0
    assert len(build(CORPUS).search("the and of", k=5)[0]) == 0


words = st.sampled_from(["apple", "pear", "plum", "fig", "kiwi", "lime", "the", "cats"])
texts = st.lists(words, min_size=0, max_size=8).map(" ".join)
ops = st.lists(st.tuples(st.booleans(), st.integers(0, 15), texts), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops=ops, query=st.lists(words, min_size=1, max_size=3).map(" ".join))
def test_incremental_updates_equal_a_fresh_build(ops, query) -> None:
    idx = LexicalIndex()
    docs: dict[int, str] = {}
    for upsert, slot, text in ops:
        idx.search(query, k=5)  # populate the per-term caches between updates
        if upsert:
            idx.upsert(slot, text)
            docs[slot] = text
        else:
            idx.remove(slot)
            docs.pop(slot, None)
    got_slots, got_scores = idx.search(query, k=20)
    want_slots, want_scores = build(docs).search(query, k=20)
    assert dict(zip(got_slots.tolist(), got_scores.tolist(), strict=True)) == pytest.approx(
        dict(zip(want_slots.tolist(), want_scores.tolist(), strict=True)), rel=1e-5
    )
    assert len(idx) == len(docs)


def _term(slots: list[int], weights: list[float]) -> tuple[np.ndarray, np.ndarray, float]:
    return np.array(slots, np.uint32), np.array(weights, np.float32), 1.0


@pytest.mark.parametrize(
    ("terms", "slots", "allowed", "field"),
    [
        ([_term([1, 2], [1.0])], 8, None, "terms"),  # fewer weights than slots
        ([_term([1, 9], [1.0, 1.0])], 8, None, "terms"),  # a slot past the table
        ([(np.array([1], np.int64), np.ones(1, np.float32), 1.0)], 8, None, "terms[0]"),
        ([_term([1], [1.0]), (np.array([1], np.uint32), [1.0], 1.0)], 8, None, "terms[1]"),
        ([_term([1], [1.0])], 8, np.ones(8, np.int8), "allowed"),
    ],
    ids=["lengths", "slot-range", "slot-dtype", "weights-list", "mask-dtype"],
)
def test_native_scoring_names_the_bad_argument(terms, slots, allowed, field: str) -> None:
    from memosd._native import postings_top_k
    from memosd.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError) as info:
        postings_top_k(terms, slots, 5, allowed)
    assert info.value.field == field
