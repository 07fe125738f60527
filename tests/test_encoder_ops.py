"""The encoder-layer helpers of memosd._native (GELU, ragged attention, layer norm)
against NumPy definitions, and their argument checks."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from memosd._native import (
    Int8Linear,
    add_layer_norm,
    attention,
    embed_tokens,
    gelu_in_place,
    int8_encoder,
    mean_pool,
)
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


def _layer_norm_onto_itself(x: np.ndarray) -> None:
    """x as its own residual: x is written in place, so the call must refuse it."""
    add_layer_norm(x, x, np.ones(4, np.float32), np.zeros(4, np.float32), 1e-5)


def _tables(rng: np.random.Generator, hidden: int = 16) -> dict[str, np.ndarray]:
    def f32(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return {
        "word": f32(50, hidden),
        "position": f32(12, hidden),
        "token_type": f32(hidden),
        "gamma": f32(hidden),
        "beta": f32(hidden),
    }


def test_embed_tokens_gives_the_numpy_rows() -> None:
    t = _tables(np.random.default_rng(5))
    ids = np.array([4, 49, 0, 7, 7, 12, 3], dtype=np.int64)
    offsets = np.array([0, 2, 2, 7], dtype=np.int64)
    positions = np.array([0, 1, 0, 1, 2, 3, 4])
    expected = t["word"][ids] + t["position"][positions] + t["token_type"]
    add_layer_norm(expected, None, t["gamma"], t["beta"], 1e-12)
    got = embed_tokens(ids, offsets, *t.values(), 1e-12)
    assert got.shape == (7, 16) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_mean_pool_averages_and_normalises_each_sequence() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((9, 16)).astype(np.float32)
    offsets = np.array([0, 4, 5, 9], dtype=np.int64)
    pooled = np.add.reduceat(x, offsets[:-1], axis=0) / np.diff(offsets)[:, None]
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    got = mean_pool(x, offsets)
    assert got.shape == (3, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_embed_tokens_and_mean_pool_name_the_bad_argument() -> None:
    t = _tables(np.random.default_rng(7))
    ids, offsets = np.array([1, 2], dtype=np.int64), np.array([0, 2], dtype=np.int64)
    cases = {
        "ids": [
            lambda: embed_tokens(np.array([50, 1]), offsets, *t.values(), 1e-12),
            lambda: embed_tokens(np.zeros(13, np.int64), np.array([0, 13]), *t.values(), 1e-12),
            lambda: embed_tokens(ids.astype(np.int32), offsets, *t.values(), 1e-12),
        ],
        "offsets": [lambda: embed_tokens(ids, np.array([0, 3]), *t.values(), 1e-12)],
        "word": [
            lambda: embed_tokens(
                ids, offsets, t["word"].astype(np.float64), *list(t.values())[1:], 1e-12
            )
        ],
        "x": [lambda: mean_pool(np.zeros(4, np.float32), offsets)],
    }
    cases["offsets"].append(lambda: mean_pool(np.zeros((3, 4), np.float32), offsets))
    for field, calls in cases.items():
        for call in calls:
            with pytest.raises(InvalidArgumentError) as info:
                call()
            assert info.value.field == field


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
        (lambda: _layer_norm_onto_itself(np.ones((2, 4), np.float32)), "residual"),
    ],
    ids=[
        "heads",
        "offsets-end",
        "offsets-dtype",
        "qkv-width",
        "qkv-dtype",
        "x-rows",
        "residual",
        "residual-is-x",
    ],
)
def test_encoder_helpers_name_the_bad_argument(call, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        call()
    assert info.value.field == field


def _int8_layer(rng: np.random.Generator, hidden: int, inner: int) -> tuple:
    def linear(n: int, k: int, activation: str | None = None) -> Int8Linear:
        w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
        return Int8Linear(w, rng.standard_normal(n).astype(np.float32), activation=activation)

    def norm() -> np.ndarray:
        return (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)

    return (
        linear(3 * hidden, hidden),
        linear(hidden, hidden),
        norm(),
        norm() - 1,
        linear(inner, hidden, "gelu"),
        linear(hidden, inner),
        norm(),
        norm() - 1,
    )


def test_int8_encoder_gives_the_floats_of_the_steps_one_by_one() -> None:
    rng = np.random.default_rng(3)
    layers = [_int8_layer(rng, 32, 64) for _ in range(2)]
    tables = tuple(_tables(rng, 32).values())
    ids = rng.integers(0, 50, 10)
    offsets = np.array([0, 3, 10], dtype=np.int64)
    x = embed_tokens(ids, offsets, *tables, 1e-12)
    expected = x.copy()
    for qkv, out, g1, b1, up, down, g2, b2 in layers:
        h = out(attention(qkv(expected), offsets, 4))
        add_layer_norm(h, expected, g1, b1, 1e-12)
        expected = down(up(h))
        add_layer_norm(expected, h, g2, b2, 1e-12)
    got = int8_encoder(ids, offsets, tables, 1e-12, 4, layers)
    np.testing.assert_array_equal(got, mean_pool(expected, offsets))
    assert not np.array_equal(got, mean_pool(x, offsets))
    np.testing.assert_array_equal(
        int8_encoder(ids, offsets, tables, 1e-12, 4, []), mean_pool(x, offsets)
    )


def test_int8_encoder_names_the_bad_argument() -> None:
    rng = np.random.default_rng(4)
    layer = _int8_layer(rng, 32, 64)
    tables = tuple(_tables(rng, 32).values())
    ids = rng.integers(0, 50, 10)
    offsets = np.array([0, 10], dtype=np.int64)
    cases = {
        "ids": lambda: int8_encoder(ids.astype(np.int32), offsets, tables, 1e-12, 4, [layer]),
        "offsets": lambda: int8_encoder(ids, np.array([0, 9]), tables, 1e-12, 4, [layer]),
        "gamma": lambda: int8_encoder(
            ids, offsets, (*tables[:3], tables[3].astype(np.float64), tables[4]), 1e-12, 4, []
        ),
        "layers[0]": lambda: int8_encoder(
            ids, offsets, tables, 1e-12, 4, [(*layer[:2], layer[2].astype(np.float64), *layer[3:])]
        ),
        "heads": lambda: int8_encoder(ids, offsets, tables, 1e-12, 5, [layer]),
    }
    for field, call in cases.items():
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert info.value.field == field
