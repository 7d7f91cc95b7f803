"""MaxPool2D records each window's first maximum while pooling; windows of any size."""

from __future__ import annotations

import convnet_core as cn
import numpy
from convnet_core import layers as L


def test_windows_of_more_than_255_pixels_send_dy_to_the_first_max():
    # one 16x17 window (272 offsets, beyond uint8) per channel; numpy.argmax is the first max
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((2, 3, 16, 17))
    x[0, 1, 15, 16] = 10.0  # the very last offset (271)
    x[1, 2] = 1.0  # a window of ties: the first pixel takes it
    layer = L.MaxPool2D((16, 17))
    y, _, cache = cn.apply(layer, {}, {}, x, training=True, xp=numpy)
    dy = rng.standard_normal(y.shape)  # (2, 3, 1, 1)
    _, dx = cn.grad(layer, {}, cache, dy, xp=numpy)
    want = numpy.zeros_like(x)
    for n in range(2):
        for c in range(3):
            first = numpy.unravel_index(numpy.argmax(x[n, c]), (16, 17))
            want[n, c][first] = dy[n, c, 0, 0]
    numpy.testing.assert_array_equal(dx, want)
    assert want[0, 1, 15, 16] != 0 and want[1, 2, 0, 0] != 0


def test_inference_keeps_no_cache():
    x = numpy.arange(16.0).reshape(1, 1, 4, 4)
    y, _, cache = cn.apply(L.MaxPool2D(), {}, {}, x, training=False, xp=numpy)
    numpy.testing.assert_array_equal(y[0, 0], [[5.0, 7.0], [13.0, 15.0]])
    assert cache is None
