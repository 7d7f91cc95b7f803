"""ops.matmul_long_k: a product summed over pieces of a long inner dimension."""

from __future__ import annotations

import numpy
import pytest
from convnet_core import ops


@pytest.mark.parametrize(
    ("m", "k", "n"),
    [
        (9, 50176, 8),  # the README model's first conv: pieces of 13,888
        (3, 100_003, 5),  # K not a multiple of the piece
        (16, 3, 16),  # small: one product
        (72, 12544, 16),  # output too large for pieces to pay: one product
    ],
)
def test_equals_one_product(m, k, n):
    rng = numpy.random.default_rng(0)
    a = rng.standard_normal((m, k))
    b = rng.standard_normal((k, n))
    got = ops.matmul_long_k(a, b, xp=numpy)
    assert got.shape == (m, n)
    numpy.testing.assert_allclose(got, a @ b, rtol=1e-10, atol=1e-9)


def test_float32_stays_float32_and_transposed_operands_work():
    rng = numpy.random.default_rng(1)
    cols = rng.standard_normal((9, 50176)).astype("float32")
    dy2d = rng.standard_normal((8, 50176)).astype("float32")
    got = ops.matmul_long_k(cols, dy2d.T, xp=numpy)
    assert got.dtype == numpy.float32
    exact = cols.astype("float64") @ dy2d.T.astype("float64")
    numpy.testing.assert_allclose(got, exact, rtol=1e-4, atol=1e-2)
