"""HYBRID rank fusion."""

from __future__ import annotations

import numpy as np
import pytest
from memosd.search.fusion import (
    HYBRID_MIN_SPANS,
    HYBRID_WEIGHTS,
    RRF_K,
    fuse,
    normalized,
    ranking,
    rrf,
)


def pairs(fused: tuple[np.ndarray, np.ndarray]) -> list[tuple[int, float]]:
    keys, scores = fused
    assert keys.dtype == np.uint64
    return list(zip(keys.tolist(), scores.tolist(), strict=True))


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = dict(pairs(rrf([ranking([(1, 0.9), (2, 0.8)]), ranking([(2, 12.0), (3, 3.0)])])))
    assert fused[2] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))
    assert fused[1] == pytest.approx(1 / (RRF_K + 1))
    assert fused[3] == pytest.approx(1 / (RRF_K + 2))


def test_agreement_comes_first_and_ties_are_deterministic() -> None:
    ranked = pairs(rrf([ranking([(1, 0.9), (2, 0.8)]), ranking([(2, 12.0), (1, 3.0)])]))
    assert [k for k, _ in ranked] == [1, 2]  # tie broken by key
    in_both = fuse(ranking([(5, 0.5), (6, 0.45), (7, 0.1)]), ranking([(6, 9.0)]))
    assert pairs(in_both)[0][0] == 6
    # A clear lexical winner beats the top of a flat vector list.
    clear = fuse(ranking([(1, 0.61), (2, 0.60), (3, 0.10)]), ranking([(2, 9.0), (3, 1.0)]))
    assert pairs(clear)[0][0] == 2


def test_ties_go_to_the_lower_key_whatever_the_input_order() -> None:
    ranked = pairs(fuse(ranking([(9, 1.0), (4, 1.0), (7, 1.0)]), ranking([])))
    weight = HYBRID_WEIGHTS[0]
    assert ranked == [(4, weight), (7, weight), (9, weight)]


def test_hybrid_weighs_the_vector_ranking_below_the_lexical() -> None:
    assert HYBRID_WEIGHTS == (0.4, 1.0)
    # Each list's best gets 1 before weighting, its worst 0.
    ranked = pairs(fuse(ranking([(1, 0.9), (2, 0.1)]), ranking([(2, 5.0), (3, 0.0)])))
    assert [k for k, _ in ranked] == [2, 1, 3]
    assert dict(ranked) == pytest.approx({2: 1.0, 1: 0.4, 3: 0.0})


def test_a_near_tie_of_the_lexical_ranking_does_not_outvote_the_vector_ranking() -> None:
    assert HYBRID_MIN_SPANS == (0.0, 0.5)
    # Two memories matching only "user" of the query, and a clear vector winner.
    tea, dog = 1, 2
    vector = ranking([(tea, 0.49), (dog, 0.30)])
    lexical = ranking([(dog, 0.19), (tea, 0.17)])
    ranked = dict(pairs(fuse(vector, lexical)))
    assert ranked == pytest.approx({tea: 0.4 + (0.17 - 0.095) / 0.095, dog: 1.0})
    assert max(ranked, key=ranked.__getitem__) == tea
    # A lexical ranking with a real spread is scaled as before: a clear winner wins.
    assert pairs(fuse(vector, ranking([(dog, 9.0), (tea, 1.0)])))[0][0] == dog


def test_normalized_scales_each_ranking() -> None:
    ranked = normalized(
        [ranking([(1, 0.9), (2, 0.5)]), ranking([(2, 30.0), (3, 10.0)])], weights=[1.0, 0.5]
    )
    assert dict(pairs(ranked)) == pytest.approx({1: 1.0, 2: 0.5, 3: 0.0})
    assert pairs(normalized([ranking([]), ranking([(4, 2.0)])])) == [(4, 1.0)]


def test_nothing_to_fuse() -> None:
    assert pairs(fuse(ranking([]), ranking([]))) == []
    assert pairs(rrf([])) == []


def test_keys_beyond_int64_keep_their_value() -> None:
    big = 2**64 - 2
    top = pairs(fuse(ranking([(big, 0.5)]), ranking([(big, 3.0), (1, 1.0)])))[0]
    assert top == (big, pytest.approx(sum(HYBRID_WEIGHTS)))


def test_bad_rankings_name_the_argument() -> None:
    from memosd._native import fuse_rankings
    from memosd.errors import InvalidArgumentError

    keys = np.array([1, 2], dtype=np.uint64)
    with pytest.raises(InvalidArgumentError, match=r"rankings\[1\].*float64"):
        fuse_rankings([(keys, np.ones(2)), (keys, np.ones(2, dtype=np.float32))], [1.0, 1.0])
    with pytest.raises(InvalidArgumentError, match=r"rankings\[0\].*2 keys and 1 scores"):
        fuse_rankings([(keys, np.ones(1))], [1.0])
    with pytest.raises(InvalidArgumentError, match="weights"):
        fuse_rankings([(keys, np.ones(2))], [1.0, 2.0])
    with pytest.raises(InvalidArgumentError, match="rrf_k"):
        fuse_rankings([(keys, np.ones(2))], [1.0], rrf_k=-1.0)
    with pytest.raises(InvalidArgumentError, match="min_spans"):
        fuse_rankings([(keys, np.ones(2))], [1.0], min_spans=[0.5, 0.5])
    with pytest.raises(InvalidArgumentError, match=r"rankings\[0\].*min_span"):
        fuse_rankings([(keys, np.ones(2))], [1.0], min_spans=[-0.1])
