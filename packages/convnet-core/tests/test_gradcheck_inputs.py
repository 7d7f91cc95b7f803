"""check_grad works in float64 whatever the dtype of the input batch it is given."""

from __future__ import annotations

import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool", "float32"])
def test_check_grad_converts_the_input_to_float64(dtype, xp):
    layer = L.Dense(2)
    params, state = cn.init(layer, (3,), rng=0, xp=xp, dtype="float64")
    x = xp.asarray(
        numpy.array([[1, 2, 3], [4, 5, 6]]).astype(dtype)
    )  # bool: [[1, 1, 1], [1, 1, 1]]
    before = x.copy()

    report = cn.check_grad(layer, params, state, x, xp=xp)

    assert report.ok and report.max_error < 1e-7, str(report)
    assert set(report.errors) == {"W", "b", "input"}
    assert x.dtype == numpy.dtype(dtype) and bool((x == before).all())  # left untouched


def test_check_grad_accepts_a_nested_list_input(xp):
    layer = L.Dense(2)
    params, state = cn.init(layer, (3,), rng=0, xp=xp, dtype="float64")

    report = cn.check_grad(layer, params, state, [[1, 2, 3], [4, 5, 6]], xp=xp)

    assert report.ok and report.max_error < 1e-7, str(report)
