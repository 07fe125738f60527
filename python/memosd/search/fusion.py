"""Fusing the vector and the lexical ranking into one (HYBRID mode).

Two standard methods are implemented; ``fuse`` (HYBRID) uses score normalisation.

- ``rrf``: score(d) = sum over rankings of 1 / (RRF_K + rank(d)). It ignores the
  raw scores, so it needs no calibration between cosine similarity and BM25,
  whose scales have nothing in common.
- ``normalized``: each ranking's scores min-max scaled to [0, 1] over its own
  candidates, then summed with weights.

On LoCoMo (bench/bench_locomo.py, bench/RESULTS.md) both beat VECTOR alone,
and ``normalized`` beats ``rrf`` clearly (recall@10 0.513 against 0.415 over
760 questions, equal weights): RRF gives a rank-1 hit of the weaker ranking as
much weight as a rank-1 hit of the stronger, whereas normalised scores keep how
far ahead a candidate is, so a strong exact-term BM25 match is not diluted by a
flat list of near-equal cosine similarities.

HYBRID weighs the vector ranking 0.4 against the lexical 1.0
(``HYBRID_WEIGHTS``). With equal weights HYBRID fell behind LEXICAL alone on
LoCoMo (recall@10 0.514 against 0.550): cosine similarities of a small sentence
model are flat, and their min-max spread outvoted exact names and dates. The
weight was chosen by leaving one conversation out: every one of the five folds
picked 0.4 from 0.2-1.0 on the other four, and on the held-out conversations
recall@10 rose from 0.514 to 0.565 and recall@5 from 0.400 to 0.458.

The lexical scale spans at least half of its best score (``HYBRID_MIN_SPANS``).
Min-max units turn any gap into 1 against 0: in a cube of two memories that both
match only "user" of "what does the user drink" (BM25 0.19 and 0.17, the shorter
text ahead), the 10% gap outvoted the vector ranking, which put the memory about
green tea well ahead of the one about a dog. With the span the lexical units are 1
and 0.82, and the tea memory leads. On LoCoMo the lowest of the 50 lexical
candidates is under half the best for 740 of 759 questions, and recall is the same
(bench/bench_locomo.py); a span on the vector side as well cost recall@10 0.011
in leave-one-out (cosine similarities of a small model sit close together, and the
weight of 0.4 is tuned to their min-max spread).

Rankings are pairs of arrays, as the indexes return them, and the sums and the
ordering run natively (``memosd._native.fuse_rankings``): a query fuses about a
hundred candidates, which in Python dicts cost more than both index lookups.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from memosd._native import fuse_rankings

RRF_K = 60.0
# (vector, lexical) weights and least spans of the HYBRID ranking; see the module's
# docstring.
HYBRID_WEIGHTS = (0.4, 1.0)
HYBRID_MIN_SPANS = (0.0, 0.5)

# (keys uint64, scores float64), best first.
Ranking = tuple[np.ndarray, np.ndarray]


def ranking(pairs: Iterable[tuple[int, float]]) -> Ranking:
    """A ranking from (key, score) pairs, best first."""
    pairs = list(pairs)
    keys = np.fromiter((k for k, _ in pairs), dtype=np.uint64, count=len(pairs))
    scores = np.fromiter((s for _, s in pairs), dtype=np.float64, count=len(pairs))
    return keys, scores


def rrf(rankings: Sequence[Ranking], k: float = RRF_K) -> Ranking:
    """Reciprocal-rank fusion of rankings; (keys, fused scores), best first, ties by key."""
    return fuse_rankings(rankings, [1.0] * len(rankings), rrf_k=k)


def normalized(
    rankings: Sequence[Ranking],
    weights: Sequence[float] | None = None,
    min_spans: Sequence[float] | None = None,
) -> Ranking:
    """Weighted sum of per-ranking min-max normalised scores (each scale spanning at
    least ``min_spans[i]`` of its top score); (keys, scores), best first, ties by key."""
    if weights is None:
        weights = [1.0] * len(rankings)
    return fuse_rankings(rankings, weights, min_spans=min_spans)


def fuse(vector: Ranking, lexical: Ranking) -> Ranking:
    """The HYBRID ranking: normalised fusion with ``HYBRID_WEIGHTS`` and
    ``HYBRID_MIN_SPANS``."""
    return normalized([vector, lexical], HYBRID_WEIGHTS, HYBRID_MIN_SPANS)
