"""The encoder-layer helpers of memosd._native (GELU, ragged attention, layer norm)
against NumPy definitions, and their argument checks."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from memosd._native import add_layer_norm, attention, gelu_in_place
from memosd.errors import InvalidArgumentError
from scipy.special import erf


def test_matches_the_erf_gelu() -> None:
    x = np.random.default_rng(0).standard_normal((64, 1536)).astype(np.float32) * 4
    exact = 0.5 * x.astype(np.float64) * (1.0 + erf(x.astype(np.float64) / np.sqrt(2.0)))
    y = x.copy()
    gelu_in_place(y)
    assert np.abs(y - exact).max() <= 4e-7 * (1 + np.abs(x).max())
    assert not np.array_equal(y, x)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(4, dtype=np.float64),
        np.zeros((4, 4), dtype=np.float32)[:, ::2],
        [1.0, 2.0],
    ],
    ids=["float64", "strided", "list"],
)
def test_refuses_what_it_cannot_write_in_place(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="x"):
        gelu_in_place(bad)  # type: ignore[arg-type]


def test_refuses_a_read_only_array() -> None:
    x = np.zeros(4, dtype=np.float32)
    x.flags.writeable = False
    with pytest.raises(InvalidArgumentError, match="not writable"):
        gelu_in_place(x)


def _attention_reference(qkv: np.ndarray, heads: int) -> np.ndarray:
    rows, hidden = qkv.shape[0], qkv.shape[1] // 3
    d = hidden // heads
    q, k, v = (qkv[:, i * hidden : (i + 1) * hidden].reshape(rows, heads, d) for i in range(3))
    scores = np.einsum("ihd,jhd->hij", q, k) / np.sqrt(d)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return np.einsum("hij,jhd->ihd", weights, v).reshape(rows, hidden)


def test_attention_keeps_each_sequence_to_itself() -> None:
    rng = np.random.default_rng(1)
    lengths = [4, 1, 9]
    offsets = np.array([0, 4, 5, 14], dtype=np.int64)
    qkv = rng.standard_normal((sum(lengths), 3 * 48)).astype(np.float32)
    out = attention(qkv, offsets, 6)
    assert out.shape == (14, 48) and out.dtype == np.float32
    for lo, hi in pairwise(offsets):
        np.testing.assert_allclose(out[lo:hi], _attention_reference(qkv[lo:hi], 6), atol=1e-5)


def test_layer_norm_adds_the_residual() -> None:
    rng = np.random.default_rng(2)
    x, residual = rng.standard_normal((2, 5, 16)).astype(np.float32)
    gamma, beta = rng.standard_normal((2, 16)).astype(np.float32)
    y = x + residual
    centred = y - y.mean(axis=1, keepdims=True)
    expected = centred / np.sqrt((centred**2).mean(axis=1, keepdims=True) + 1e-12) * gamma + beta
    out = x.copy()
    add_layer_norm(out, residual, gamma, beta, 1e-12)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    alone = y.copy()
    add_layer_norm(alone, None, gamma, beta, 1e-12)
    np.testing.assert_array_equal(alone, out)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: attention(np.zeros((2, 24), np.float32), np.array([0, 2]), 5), "heads"),
        (lambda: attention(np.zeros((2, 24), np.float32), np.array([0, 3]), 2), "offsets"),
        (lambda: attention(np.zeros((2, 24), np.float32), np.array([0, 2.0]), 2), "offsets"),
        (lambda: attention(np.zeros((2, 23), np.float32), np.array([0, 2]), 1), "qkv"),
        (lambda: attention(np.zeros((2, 24)), np.array([0, 2]), 2), "qkv"),
        (
            lambda: add_layer_norm(
                np.zeros((2, 4), np.float32),
                None,
                np.ones(3, np.float32),
                np.zeros(3, np.float32),
                1e-5,
            ),
            "x",
        ),
        (
            lambda: add_layer_norm(
                np.zeros((2, 4), np.float32),
                np.zeros(4, np.float32),
                np.ones(4, np.float32),
                np.zeros(4, np.float32),
                1e-5,
            ),
            "residual",
        ),
    ],
    ids=["heads", "offsets-end", "offsets-dtype", "qkv-width", "qkv-dtype", "x-rows", "residual"],
)
def test_encoder_helpers_name_the_bad_argument(call, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        call()
    assert info.value.field == field
