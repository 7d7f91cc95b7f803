"""init refuses a dtype that is not floating: weights drawn in an integer dtype would be
truncated (to zeros for Dense), silently."""

from __future__ import annotations

import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L


def small_net():
    return L.Sequential((L.Flatten(), L.Dense(4)))


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "bool", numpy.int16, "complex64"])
def test_init_refuses_a_dtype_that_is_not_floating(dtype, xp):
    name = numpy.dtype(dtype).name
    want = f"init: dtype must be a floating dtype such as 'float32' or 'float64', got {name}"
    with pytest.raises(ValueError) as error:
        cn.init(small_net(), (1, 8, 8), rng=0, xp=xp, dtype=dtype)
    assert str(error.value) == want


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", numpy.float32])
def test_init_takes_every_floating_dtype(dtype, xp):
    params, _ = cn.init(small_net(), (1, 8, 8), rng=0, xp=xp, dtype=dtype)
    assert params[1]["W"].dtype == numpy.dtype(dtype)
    assert int((params[1]["W"] != 0).sum()) > 0
