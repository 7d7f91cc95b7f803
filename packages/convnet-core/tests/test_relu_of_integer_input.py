"""A ReLU on integer images (uint8 straight from a dataset) gives an integer y, and the
float dy from the layer after it: its gradient is dy where the pixel is positive, on
NumPy and on a GPU alike (where the fused kernel takes one dtype for both)."""

import convnet_core as cn
import numpy
from convnet_core import layers as L


def test_relu_of_uint8_images_passes_a_float_gradient_back(xp):
    net = L.Sequential((L.Activation("relu"), L.Flatten(), L.Dense(3)))
    params, state = cn.init(net, (1, 2, 2), rng=0, xp=xp)
    pixels = numpy.array([[0, 7, 0, 255], [3, 0, 0, 1]], numpy.uint8).reshape(2, 1, 2, 2)
    x = xp.asarray(pixels)
    y, state, cache = cn.apply(net, params, state, x, training=True, xp=xp)
    dy = xp.ones(y.shape, y.dtype)
    grads, dx = cn.grad(net, params, cache, dy, xp=xp)
    weights = cn.backend.to_host(params[2]["W"])  # (4, 3)
    expected = weights.sum(axis=1).reshape(1, 1, 2, 2) * (pixels > 0)  # (2, 1, 2, 2)
    assert dx.dtype == numpy.float32
    numpy.testing.assert_allclose(cn.backend.to_host(dx), expected, rtol=1e-6)
