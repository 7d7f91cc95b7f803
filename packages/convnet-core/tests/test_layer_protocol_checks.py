"""The checks where layers meet: a layer that breaks the protocol (a dy of another dtype
than its output, y of another shape than its output_shape, a changed state, a return
value of the wrong form) is an error naming that layer and both values."""

from __future__ import annotations

import attrs
import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L
from convnet_core.layers.base import ShapeError


def _batch(xp, shape, dtype="float32", seed=0):
    return xp.asarray(numpy.random.default_rng(seed).standard_normal(shape).astype(dtype))


# -- dy in another dtype than the output -------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (L.Activation("relu"), (2, 3, 4, 4)),
        (L.BatchNorm2D(), (2, 3, 4, 4)),
        (L.Dense(5), (2, 3)),
    ],
)
def test_dy_of_another_dtype_than_the_output_is_refused(xp, layer, shape):
    params, state = cn.init(layer, shape[1:], rng=0, xp=xp)
    y, _, cache = cn.apply(layer, params, state, _batch(xp, shape), training=True, xp=xp)
    dy = xp.ones(y.shape, dtype="float64")
    with pytest.raises(ShapeError) as caught:
        cn.grad(layer, params, cache, dy, xp=xp)
    assert str(caught.value) == (
        f"{layer!r}.grad expected dy of dtype float32 (the output's) but got float64; "
        "cast it with dy.astype('float32')"
    )


def test_in_a_sequential_the_layer_given_the_wrong_dy_is_named(xp):
    net = L.Sequential([L.Dense(4), L.Activation("relu"), L.Dense(2)])
    params, state = cn.init(net, (3,), rng=0, xp=xp)
    y, _, cache = cn.apply(net, params, state, _batch(xp, (2, 3)), training=True, xp=xp)
    with pytest.raises(ShapeError, match=r"^layer 2 of Sequential: Dense\(units=2.*\.grad "):
        cn.grad(net, params, cache, xp.ones(y.shape, dtype="float16"), xp=xp)


def test_dy_in_the_output_dtype_passes_in_every_dtype(xp):
    net = L.Sequential([L.Dense(4), L.Activation("relu"), L.Dense(2)])
    for dtype in ("float16", "float32", "float64"):
        params, state = cn.init(net, (3,), rng=0, xp=xp, dtype=dtype)
        x = _batch(xp, (2, 3), dtype)
        y, _, cache = cn.apply(net, params, state, x, training=True, xp=xp)
        _, dx = cn.grad(net, params, cache, xp.ones_like(y), xp=xp)
        assert dx.dtype == dtype


def test_an_integer_batch_takes_floating_gradients(xp):
    net = L.Sequential([L.Flatten(), L.Dense(2)])
    params, state = cn.init(net, (2, 2), rng=0, xp=xp)
    x = xp.asarray(numpy.arange(8, dtype="uint8").reshape(2, 2, 2))
    y, _, cache = cn.apply(net, params, state, x, training=True, xp=xp)
    grads, _ = cn.grad(net, params, cache, xp.ones_like(y), xp=xp, input_grad=False)
    assert grads[1]["W"].dtype == "float32"


@attrs.frozen
class WideGrad:
    """y = x, but a grad that returns dx in float64: the layer is named, not the one
    before it, whose dy it becomes."""

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        return {}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        return x, state, (() if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        return {}, (dy.astype("float64") if input_grad else None)


def test_dx_of_another_dtype_than_the_input_names_the_layer_that_returned_it(xp):
    net = L.Sequential([L.Dense(3), WideGrad()])
    params, state = cn.init(net, (2,), rng=0, xp=xp)
    y, _, cache = cn.apply(net, params, state, _batch(xp, (4, 2)), training=True, xp=xp)
    with pytest.raises(ShapeError) as caught:
        cn.grad(net, params, cache, xp.ones_like(y), xp=xp)
    assert str(caught.value) == (
        "layer 1 of Sequential: WideGrad().grad returned dx of dtype float64 for an input of "
        "dtype float32; dx must have the input's dtype"
    )
