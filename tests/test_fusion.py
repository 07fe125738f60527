"""HYBRID rank fusion."""

from __future__ import annotations

import pytest
from memosd.search.fusion import RRF_K, fuse, normalized, rrf


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = dict(rrf([[(1, 0.9), (2, 0.8)], [(2, 12.0), (3, 3.0)]]))
    assert fused[2] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))
    assert fused[1] == pytest.approx(1 / (RRF_K + 1))
    assert fused[3] == pytest.approx(1 / (RRF_K + 2))


def test_agreement_comes_first_and_ties_are_deterministic() -> None:
    ranked = rrf([[(1, 0.9), (2, 0.8)], [(2, 12.0), (1, 3.0)]])
    assert [k for k, _ in ranked] == [1, 2]  # tie broken by key
    assert fuse([(5, 0.5), (6, 0.45), (7, 0.1)], [(6, 9.0)])[0][0] == 6  # in both lists
    # A clear lexical winner beats the top of a flat vector list.
    assert fuse([(1, 0.61), (2, 0.60), (3, 0.10)], [(2, 9.0), (3, 1.0)])[0][0] == 2


def test_normalized_scales_each_ranking() -> None:
    ranked = normalized([[(1, 0.9), (2, 0.5)], [(2, 30.0), (3, 10.0)]], weights=[1.0, 0.5])
    scores = dict(ranked)
    assert scores == pytest.approx({1: 1.0, 2: 0.5, 3: 0.0})
    assert normalized([[], [(4, 2.0)]]) == [(4, 1.0)]
