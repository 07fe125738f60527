"""memosd._native.gelu_in_place against the exact erf GELU, and its argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from memosd._native import gelu_in_place
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
