"""memosd._native.Int8Linear: int8 products against a NumPy integer reference."""

from __future__ import annotations

import numpy as np
import pytest
from memosd._native import Int8Linear, gelu_in_place
from memosd.errors import InvalidArgumentError

KERNELS = ["amx", "avx512vnni", "avx2", "scalar"]


def _quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documented activation quantisation, in float32 like the Rust code."""
    amax = np.abs(x).max(axis=1).astype(np.float32)
    safe = np.where(amax == 0, np.float32(1), amax)
    codes = np.clip(np.rint(x * (np.float32(127) / safe)[:, None]), -127, 127)
    codes[amax == 0] = 0
    return codes.astype(np.int8), (amax / np.float32(127)).astype(np.float32)


def _layer(kernel: str | None, rng: np.random.Generator, n: int = 70, k: int = 45) -> tuple:
    w = rng.standard_normal((n, k), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    try:
        return Int8Linear(w, bias, kernel=kernel), w, bias
    except InvalidArgumentError as e:
        assert e.field == "kernel"
        pytest.skip(f"this CPU has no {kernel}")


@pytest.mark.parametrize("kernel", KERNELS)
def test_matches_the_numpy_integer_reference_exactly(kernel: str) -> None:
    rng = np.random.default_rng(1)
    layer, w, bias = _layer(kernel, rng)
    assert layer.kernel == kernel and (layer.in_features, layer.out_features) == (45, 70)
    x = rng.standard_normal((13, 45), dtype=np.float32) * 3
    x[4] = 0  # an all-zero row has scale 0 and yields just the bias
    codes, row_scales = _quantize_rows(x)
    w_codes, w_scales = layer.weight_codes(), layer.weight_scales()
    assert w_codes.dtype == np.int8 and w_codes.shape == (70, 45) and np.abs(w_codes).max() == 127
    np.testing.assert_allclose(w_codes * w_scales[:, None], w, atol=w_scales.max() / 2 + 1e-7)
    ints = codes.astype(np.int64) @ w_codes.T.astype(np.int64)
    expected = ints.astype(np.float32) * row_scales[:, None] * w_scales[None, :] + bias
    y = layer(x)
    assert y.dtype == np.float32 and y.shape == (13, 70)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(y[4], bias)
    # And close to the float product.
    exact = x @ w.T + bias
    assert np.linalg.norm(y - exact) / np.linalg.norm(exact) < 0.02


def test_a_row_is_the_same_alone_and_in_a_batch() -> None:
    rng = np.random.default_rng(2)
    layer = Int8Linear(rng.standard_normal((384, 384), dtype=np.float32))
    batch = rng.standard_normal((8, 384), dtype=np.float32)
    batch[5] *= 1000  # a row with a much larger range must not change the others
    together = layer(batch)
    for i in range(8):
        np.testing.assert_array_equal(layer(batch[i : i + 1])[0], together[i])
    # Large enough to run on several threads: rows are still independent.
    big = rng.standard_normal((512, 384), dtype=np.float32)
    np.testing.assert_array_equal(layer(big)[300], layer(big[300:301])[0])


def test_bad_input_names_the_field() -> None:
    w = np.ones((4, 3), dtype=np.float32)
    cases = [
        (lambda: Int8Linear(w.astype(np.float64)), "weight"),
        (lambda: Int8Linear(np.ones(3, dtype=np.float32)), "weight"),
        (lambda: Int8Linear(np.asfortranarray(w)), "weight"),
        (lambda: Int8Linear(np.zeros((0, 3), dtype=np.float32)), "weight"),
        (lambda: Int8Linear(w * np.float32("nan")), "weight"),
        (lambda: Int8Linear(w, np.ones(3, dtype=np.float32)), "bias"),
        (lambda: Int8Linear(w, np.ones(4, dtype=np.int32)), "bias"),
        (lambda: Int8Linear(w, kernel="sse9"), "kernel"),
        (lambda: Int8Linear(w, activation="relu"), "activation"),
        (lambda: Int8Linear(w)(np.ones((2, 4), dtype=np.float32)), "x"),
        (lambda: Int8Linear(w)(np.ones((2, 3), dtype=np.float64)), "x"),
        (lambda: Int8Linear(w)(np.ones(3, dtype=np.float32)), "x"),
        (lambda: Int8Linear(w)(np.full((1, 3), np.inf, dtype=np.float32)), "x"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidArgumentError) as e:
            call()
        assert e.value.field == field, (field, e.value)
    assert Int8Linear(w)(np.zeros((0, 3), dtype=np.float32)).shape == (0, 4)


@pytest.mark.parametrize("kernel", KERNELS)
def test_shapes_around_the_tile_edges_match_scalar(kernel: str) -> None:
    """Row counts around 16-row tiles and 32-row blocks, k and n off the tile sizes."""
    rng = np.random.default_rng(3)
    layer, w, bias = _layer(kernel, rng, n=81, k=130)
    scalar = Int8Linear(w, bias, kernel="scalar")
    for m in (1, 15, 17, 33, 300):
        x = rng.standard_normal((m, 130), dtype=np.float32)
        np.testing.assert_array_equal(layer(x), scalar(x))


def test_gelu_activation_applies_to_the_product() -> None:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((96, 64), dtype=np.float32) * np.float32(0.3)
    bias = rng.standard_normal(96, dtype=np.float32)
    plain = Int8Linear(w, bias)
    gelu = Int8Linear(w, bias, activation="gelu")
    assert plain.activation is None and gelu.activation == "gelu"
    assert "gelu" in repr(gelu)
    x = rng.standard_normal((20, 64), dtype=np.float32)
    expected = plain(x)
    gelu_in_place(expected)
    # The epilogue runs the same GELU: the same floats.
    np.testing.assert_array_equal(gelu(x), expected)
