"""BM25 index: tokenizer, scores against a plain reference, incremental updates, masks."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memosd.search.lexical import STOP_WORDS, LexicalIndex, tokenize, unicode_terms

# Okapi BM25's parameters as the index documents them (memosd.search.lexical).
K1, B = 1.2, 0.75


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


# Words around the tokenizer's edges: stop words in any case, plurals, "ss" endings,
# short words, digits and underscores.
_EDGE_WORDS = ["The", "a", "I", "cats", "Class", "bus", "glass", "ss", "x2", "a_b", "1s", "IS"]


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(max_codepoint=127), max_size=60)
    | st.lists(
        st.sampled_from(_EDGE_WORDS) | st.sampled_from([" ", "'", "-", ",", "\n"]), max_size=20
    ).map("".join)
)
def test_ascii_text_takes_the_native_path_to_the_same_terms(text: str) -> None:
    from memosd._native import AsciiTerms

    native = AsciiTerms(STOP_WORDS)(text)
    assert native is not None and native == unicode_terms(text)
    assert tokenize(text) == native


def test_other_text_takes_the_regular_expression() -> None:
    from memosd._native import AsciiTerms
    from memosd.errors import InvalidArgumentError

    assert AsciiTerms(STOP_WORDS)("Straße") is None
    with pytest.raises(InvalidArgumentError) as info:
        AsciiTerms(5)  # type: ignore[arg-type]
    assert info.value.field == "stop_words"


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


def _dense_top_k(terms, slots: int, k: int, allowed=None) -> tuple[list[int], list[float]]:
    """The native ranking from its definition: float32 sums over every slot, each
    slot's ``idf * weight`` added term by term in the documented order (largest
    ``idf * weight`` first, ties by position), postings in their given order."""
    contributions = [np.float32(idf) * weights for _, weights, idf in terms]
    bounds = [max(0.0, float(c.max())) if len(c) else 0.0 for c in contributions]
    sums = np.zeros(slots, np.float32)
    for i in sorted(range(len(terms)), key=lambda i: (-bounds[i], i)):
        np.add.at(sums, terms[i][0].astype(np.int64), contributions[i])
    ok = sums > 0
    if allowed is not None:
        ok[len(allowed) :] = False
        ok[: len(allowed)] &= allowed[:slots]
    found = np.flatnonzero(ok)
    order = np.lexsort((found, -sums[found]))[:k]
    return found[order].tolist(), sums[found[order]].tolist()


def _random_terms(rng: np.random.Generator, slots: int):
    """A query's postings as a conversation's corpus has them: BM25-like weights,
    from a term in half the documents (low IDF) to one in a handful; ascending
    slots as LexicalIndex builds them, now and then shuffled or with a repeat."""
    terms = []
    coarse = rng.random() < 0.3  # few distinct weights: exact ties
    for _ in range(rng.integers(1, 7)):
        share = rng.choice([0.5, 0.1, 0.02, 0.005])
        s = np.flatnonzero(rng.random(slots) < share).astype(np.uint32)
        tf = rng.integers(1, 4, len(s)).astype(np.float32)
        length = rng.integers(3, 40, len(s)).astype(np.float32)
        w = tf * 0.5 if coarse else tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / 20))
        w = w.astype(np.float32)
        idf = math.log(1 + (slots - len(s) + 0.5) / (len(s) + 0.5))
        shape = rng.integers(0, 8)
        if shape == 0:
            order = rng.permutation(len(s))
            s, w = s[order], w[order]
        elif shape == 1 and len(s):
            i = rng.integers(0, len(s))
            s, w = np.append(s, s[i]), np.append(w, np.float32(0.7))
        terms.append((s, w, idf))
    return terms


@pytest.mark.parametrize("seed", range(4))
def test_native_ranking_is_the_dense_sum_in_the_documented_order(seed: int) -> None:
    from memosd._native import postings_top_k

    rng = np.random.default_rng(seed)
    for _ in range(60):
        slots = int(rng.choice([50, 400, 3000]))
        terms = _random_terms(rng, slots)
        allowed = None
        if rng.random() < 0.5:
            allowed = rng.random(int(rng.integers(slots // 2, slots + 5))) < 0.7
        k = int(rng.choice([1, 3, 10, 60, slots + 5]))
        got_slots, got_scores = postings_top_k(terms, slots, k, allowed)
        assert got_slots.dtype == np.int64 and got_scores.dtype == np.float32
        # Exact: the same slots and bit for bit the same sums.
        assert (got_slots.tolist(), got_scores.tolist()) == _dense_top_k(terms, slots, k, allowed)


def test_a_common_low_idf_term_still_adds_to_the_candidates() -> None:
    from memosd._native import postings_top_k

    # After the rare term, slots 5 and 7 tie at 5. The common term cannot lift a
    # slot it alone has to 5 (it adds at most 1), so it is only looked up for the
    # two; it decides between them.
    common_slots = np.arange(400, dtype=np.uint32)
    common_weights = np.full(400, 0.25, np.float32)
    common_weights[7] = 0.5
    rare = (np.array([5, 7, 100], np.uint32), np.array([1.0, 1.0, 0.5], np.float32), 5.0)
    for common in [
        (common_slots, common_weights, 2.0),
        (common_slots[::-1].copy(), common_weights[::-1].copy(), 2.0),  # read in full
    ]:
        slots, scores = postings_top_k([common, rare], 400, 2)
        assert slots.tolist() == [7, 5]
        assert scores.tolist() == [6.0, 5.5]
        slots, scores = postings_top_k([common, rare], 400, 1, np.arange(400) != 7)
        assert (slots.tolist(), scores.tolist()) == ([5], [5.5])


def test_the_order_of_writes_leaves_every_float_alike() -> None:
    texts = {slot: f"caroline {'lake ' * (slot % 3)}note {slot % 7}" for slot in range(60)}
    scrambled = np.random.default_rng(1).permutation(60).tolist()
    idx = build({slot: texts[slot] for slot in scrambled})
    ordered = build(texts)
    for query in ("caroline lake", "note lake 3", "caroline"):
        got, want = idx.search(query, 60), ordered.search(query, 60)
        assert got[0].tolist() == want[0].tolist()
        assert got[1].tolist() == want[1].tolist()


def test_the_native_index_names_bad_arguments() -> None:
    from memosd._native import Bm25Index
    from memosd.errors import InvalidArgumentError

    idx = Bm25Index()
    with pytest.raises(InvalidArgumentError) as info:
        idx.upsert(0, "not a list")
    assert info.value.field == "tokens"
    idx.upsert(0, ["lake"])
    with pytest.raises(InvalidArgumentError) as info:
        idx.search([b"lake"], 5)
    assert info.value.field == "terms"
    with pytest.raises(InvalidArgumentError) as info:
        idx.search(["lake"], 5, np.ones(3, np.int8))
    assert info.value.field == "allowed"
    assert idx.search(["lake"], 5)[0].tolist() == [0]


def test_a_common_name_with_rare_words_matches_the_reference() -> None:
    # One name in every third memory, a few rare words: the ranking the native
    # code settles early must still be BM25's.
    rng = np.random.default_rng(5)
    vocab = [f"w{i}" for i in range(300)]
    docs = {}
    for slot in range(600):
        words = rng.choice(vocab, size=int(rng.integers(3, 12))).tolist()
        if slot % 3 == 0:
            words.append("caroline")
        docs[slot] = " ".join(words)
    idx = build(docs)
    for query in ("caroline w7 w42", "caroline w3", "w250 caroline w251 w9"):
        ref = reference_bm25(docs, query)
        want = sorted(ref, key=lambda s: (-ref[s], s))[:10]
        slots, scores = idx.search(query, k=10)
        assert slots.tolist() == want
        assert scores.tolist() == pytest.approx([ref[s] for s in want], rel=1e-5)
