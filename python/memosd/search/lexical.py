"""BM25 inverted index over the doc table's slots, updated incrementally.

Tokenizer (kept deliberately simple and language-agnostic apart from the stop
list): Unicode case-folding, runs of word characters (``\\w+``) as tokens,
English stop words and one-character tokens dropped, and a trailing plural
``s`` stripped from tokens longer than three characters (not after ``s``, so
"class" stays whole). The same tokenizer runs over documents and queries.

Scoring is Okapi BM25 (k1 = 1.2, b = 0.75) with corpus statistics (document
count, document frequency, average length) over every indexed memory. Postings
live in dicts for cheap incremental updates; on first use after a change, each
term's postings become NumPy arrays of slots, ascending, and of their BM25 term
weights (everything but the IDF) at the current average length, kept with the
term's IDF. Any change to the corpus statistics drops them, so scores are always
exact. While the corpus is unchanged a query costs a quick (vectorised) pass
over its terms' postings for their bounds, and adding them up only where it can
matter (``memosd._native.postings_top_k``): once the rare, high-IDF terms have
settled the ranking, the common terms' ascending postings are only searched for
the documents that can still make the top ``k``.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from memosd._native import postings_top_k

K1 = 1.2
B = 0.75

_WORD = re.compile(r"\w\w+")  # one-character tokens never count
# A short English stop list (NLTK's, minus contractions).
_STOP_LIST = """a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its itself just
me more most my myself no nor not now of off on once only or other our ours ourselves out over own
same she should so some such than that the their theirs them themselves then there these they this
those through to too under until up very was we were what when where which while who whom why will
with would you your yours yourself yourselves"""
STOP_WORDS = frozenset(_STOP_LIST.split())


def tokenize(text: str) -> list[str]:
    """Index terms of ``text``, in order, with repeats."""
    terms = []
    for tok in _WORD.findall(text.casefold()):
        if tok in STOP_WORDS:
            continue
        if len(tok) > 3 and tok[-1] == "s" and tok[-2] != "s":
            tok = tok[:-1]
        terms.append(tok)
    return terms


class LexicalIndex:
    """BM25 over slots. Not thread-safe: the engine serialises writers and readers."""

    def __init__(self) -> None:
        self._postings: dict[str, dict[int, int]] = {}
        # term -> (slots, BM25 weight without IDF, IDF) at the current statistics
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
        self._doc_terms: dict[int, tuple[str, ...]] = {}  # slot -> its distinct terms
        self._lengths = np.zeros(1024, dtype=np.float32)
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._doc_terms)

    def upsert(self, slot: int, text: str) -> None:
        """Index ``text`` as the document in ``slot``, replacing what was there."""
        self.remove(slot)
        tokens = tokenize(text)
        terms = Counter(tokens)
        self._doc_terms[slot] = tuple(terms)
        for term, tf in terms.items():
            self._postings.setdefault(term, {})[slot] = tf
        self._arrays.clear()  # the average length changed
        length = len(tokens)
        if slot >= len(self._lengths):
            grown = np.zeros(max(2 * len(self._lengths), slot + 1), dtype=np.float32)
            grown[: len(self._lengths)] = self._lengths
            self._lengths = grown
        self._lengths[slot] = length
        self._total_length += length

    def remove(self, slot: int) -> None:
        terms = self._doc_terms.pop(slot, None)
        if terms is None:
            return
        for term in terms:
            postings = self._postings[term]
            del postings[slot]
            if not postings:
                del self._postings[term]
        self._arrays.clear()
        self._total_length -= int(self._lengths[slot])
        self._lengths[slot] = 0

    def search(
        self, query: str, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` slots by BM25 (score > 0), best first, limited to ``mask`` if given."""
        n_docs = len(self._doc_terms)
        terms = sorted(set(tokenize(query)))  # a fixed order: equal bounds sum alike
        if n_docs == 0 or not terms or k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        postings = []
        for term in terms:
            arrays = self._term_arrays(term, n_docs)
            if arrays is not None:
                postings.append(arrays)
        # Summed and ranked natively, at a cost that follows the postings rather
        # than the corpus size.
        return postings_top_k(postings, len(self._lengths), k, mask)

    def _term_arrays(self, term: str, n_docs: int) -> tuple[np.ndarray, np.ndarray, float] | None:
        arrays = self._arrays.get(term)
        if arrays is None:
            postings = self._postings.get(term)
            if postings is None:
                return None
            slots = np.fromiter(postings.keys(), dtype=np.uint32, count=len(postings))
            tf = np.fromiter(postings.values(), dtype=np.float32, count=len(postings))
            order = np.argsort(slots, kind="stable")  # ascending: terms can be skipped through
            slots, tf = slots[order], tf[order]
            avg_len = self._total_length / n_docs
            norm = K1 * (1.0 - B + B * self._lengths[slots] / np.float32(avg_len))
            weights = tf * np.float32(K1 + 1.0) / (tf + norm)
            idf = math.log(1.0 + (n_docs - len(slots) + 0.5) / (len(slots) + 0.5))
            arrays = self._arrays[term] = (slots, weights, idf)
        return arrays
