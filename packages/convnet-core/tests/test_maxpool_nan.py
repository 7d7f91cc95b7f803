"""MaxPool2D with NaN in a window: the max is NaN and its gradient goes to a NaN.

PyTorch's rule, read in row-major order over the window: an element becomes the maximum when
`val > max || isnan(val)`. So a NaN takes over from any number, a later NaN from an earlier
one (the gradient goes to the last NaN), and nothing takes over from a NaN but a NaN. Run
with the `xp` fixture: NumPy (both of its code paths: tiling windows in two steps, and any
windows), or under tests-cuda the GPU kernels and the same array code on CuPy
(CONVNET_MAXPOOL=arrays).
"""

from __future__ import annotations

import convnet_core as cn
import numpy
import pytest
from convnet_core import cuda_kernels
from convnet_core import layers as L
from convnet_core.backend import to_host


def pytorch_rule(window):
    """(max, offset) of a 2-D window as PyTorch's max_pool2d picks them."""
    top, where = -numpy.inf, 0
    for k, value in enumerate(window.ravel()):
        if value > top or numpy.isnan(value):
            top, where = value, k
    return top, where


def expected(x, pool, stride):
    """(y, dx for dy = 1) of max pooling x (N, C, H, W) by the rule above."""
    (kh, kw), (sh, sw) = pool, stride
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    y, dx = numpy.empty((n, c, ho, wo), x.dtype), numpy.zeros_like(x)
    for b, ch, oy, ox in numpy.ndindex(n, c, ho, wo):
        window = x[b, ch, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw]
        y[b, ch, oy, ox], k = pytorch_rule(window)
        dx[b, ch, oy * sh + k // kw, ox * sw + k % kw] += 1
    return y, dx


def pool_and_grad(xp, x, pool, stride):
    layer = L.MaxPool2D(pool, stride=stride)
    y, _, cache = cn.apply(layer, {}, {}, xp.asarray(x), training=True, xp=xp)
    _, dx = cn.grad(layer, {}, cache, xp.ones_like(y), xp=xp)
    return to_host(y), to_host(dx)


def test_a_nan_after_the_maximum_takes_its_gradient(xp):
    # the window [[1, nan], [0, 5]]: PyTorch sends dy to the NaN, not to 1 or 5
    x = numpy.array([[[[1.0, numpy.nan], [0.0, 5.0]]]], dtype="float32")
    y, dx = pool_and_grad(xp, x, (2, 2), (2, 2))
    assert numpy.isnan(y).all()
    numpy.testing.assert_array_equal(dx, [[[[0.0, 1.0], [0.0, 0.0]]]])


WINDOWS = [
    ((2, 2), (2, 2)),  # tiling: NumPy's two-step path
    ((3, 3), (3, 3)),  # tiling, more than two views per step
    ((3, 3), (2, 2)),  # overlapping
    ((2, 3), (1, 2)),
]


@pytest.mark.parametrize(("pool", "stride"), WINDOWS, ids=str)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("on_gpu", ["kernels", "arrays"])
def test_windows_with_nans_follow_pytorchs_rule(xp, monkeypatch, pool, stride, dtype, on_gpu):
    monkeypatch.setattr(cuda_kernels, "MAXPOOL_ON_GPU", on_gpu)  # read on CuPy only
    # ties (small integers) and NaNs, one or several per window, anywhere in it
    rng = numpy.random.default_rng(0)
    x = rng.integers(0, 3, (2, 3, 9, 9)).astype(dtype)
    x[rng.random(x.shape) < 0.2] = numpy.nan
    want_y, want_dx = expected(x, pool, stride)
    y, dx = pool_and_grad(xp, x, pool, stride)
    numpy.testing.assert_array_equal(y, want_y)  # NaN where want_y has NaN
    numpy.testing.assert_array_equal(dx, want_dx)
    assert numpy.isnan(want_y).any() and not numpy.isnan(want_y).all()
