"""BatchNorm2D on float16 inputs takes the batch variance in float32.

float16's largest number is 65,504 = 256², so a value 256 or more from its channel's mean
squares to inf in float16, and a variance above 65,504 cannot be held in float16 at all.
Mixed precision keeps the running statistics in float32: there the squares, their mean and
the running variance stay float32, and only 1/√(σ² + eps), which the float16 arithmetic
uses, is rounded to float16. Run with the `xp` fixture: NumPy, or the GPU code path (its
statistics kernel) under tests-cuda.
"""

from __future__ import annotations

import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L
from convnet_core import losses, optim, precision
from convnet_core import tree as T
from convnet_core.backend import to_host

MOMENTUM = 0.9


def batchnorm_step(xp, x, *, statistics_dtype):
    """One training pass of BatchNorm2D over float16 x (N, C, H, W), gamma and beta float16,
    running statistics of `statistics_dtype`: (y, new_state, inv_std), on the host."""
    layer = L.BatchNorm2D(momentum=MOMENTUM)
    params, state = cn.init(layer, x.shape[1:], rng=0, dtype=statistics_dtype, xp=xp)
    half = T.map(lambda a: a.astype("float16"), params)
    y, new_state, tape = cn.apply(layer, half, state, xp.asarray(x), training=True, xp=xp)
    _, inv_std = tape.cache  # (x̂, 1/√(σ² + eps))
    return to_host(y), T.map(to_host, new_state), to_host(inv_std)


def expected(x, eps=1e-5):
    """What the layer should give for x, in float64: (x̂, running_mean, running_var)."""
    x = x.astype("float64")
    mean = x.mean(axis=(0, 2, 3))
    var = batch_var(x)
    count = x.size // x.shape[1]
    x_hat = (x - mean[:, None, None]) / numpy.sqrt(var + eps)[:, None, None]
    running_mean = (1 - MOMENTUM) * mean
    running_var = MOMENTUM + (1 - MOMENTUM) * var * count / (count - 1)
    return x_hat, running_mean, running_var


def batch_var(x):
    """The biased variance of each channel of x (N, C, H, W), in float64: (C,)."""
    return x.astype("float64").var(axis=(0, 2, 3))


def images(high, seed=0):
    """float16 (8, 2, 4, 4) uniform in [0, high): values hundreds away from the mean."""
    rng = numpy.random.default_rng(seed)
    return rng.uniform(0, high, (8, 2, 4, 4)).astype("float16")


@pytest.mark.parametrize("high", [600, 1000], ids=["var-33k", "var-83k"])
def test_mixed_precision_variance_of_values_far_from_the_mean(xp, high):
    # |x - μ| reaches 300 (500): each square overflows float16; with high=1000 the
    # variance itself (about 83,000) does too
    x = images(high)
    y, state, inv_std = batchnorm_step(xp, x, statistics_dtype="float32")
    x_hat, running_mean, running_var = expected(x)
    assert state["running_var"].dtype == numpy.float32
    assert state["running_mean"].dtype == numpy.float32
    # x - μ is rounded to float16 (μ itself too): about 1e-4 of the variance
    numpy.testing.assert_allclose(state["running_var"], running_var, rtol=5e-4)
    numpy.testing.assert_allclose(state["running_mean"], running_mean, rtol=1e-3)
    assert inv_std.dtype == numpy.float16  # what the float16 arithmetic uses
    numpy.testing.assert_allclose(inv_std, 1 / numpy.sqrt(batch_var(x)), rtol=1e-3)
    assert y.dtype == numpy.float16
    numpy.testing.assert_allclose(y, x_hat, atol=5e-3)  # gamma 1, beta 0


def test_float16_statistics_of_values_far_from_the_mean(xp):
    # all float16 (cn.init(dtype="float16")): a variance of about 33,600 fits in float16,
    # its squares do not
    x = images(600, seed=1)
    y, state, inv_std = batchnorm_step(xp, x, statistics_dtype="float16")
    x_hat, running_mean, running_var = expected(x)
    assert state["running_var"].dtype == numpy.float16
    numpy.testing.assert_allclose(state["running_var"], running_var, rtol=2e-3)
    numpy.testing.assert_allclose(state["running_mean"], running_mean, rtol=2e-3)
    assert numpy.isfinite(inv_std).all()
    numpy.testing.assert_allclose(y, x_hat, atol=5e-3)


def test_a_mixed_precision_step_on_raw_pixel_values_keeps_the_running_variance_finite(xp):
    # pixels 0..255 into Conv2D -> BatchNorm2D: some of the convolution's outputs lie more
    # than 256 from their channel's mean
    net = L.Sequential(
        (L.Conv2D(4, (3, 3)), L.BatchNorm2D(), L.Activation("relu"), L.Flatten(), L.Dense(3))
    )
    rng = numpy.random.default_rng(2)
    x = rng.integers(0, 256, (16, 1, 6, 6)).astype("float32")
    labels = rng.integers(0, 3, 16)
    opt = optim.sgd(lr=1e-3)
    results = {}
    for mixed in (False, True):
        params, state = cn.init(net, (1, 6, 6), rng=0, xp=xp)
        step = precision.mixed_precision_step if mixed else float32_step
        results[mixed] = step(
            net, params, state, opt.init(params), precision.DynamicLossScaler(),
            xp.asarray(x), xp.asarray(labels),
            optimizer=opt, loss_fn=losses.softmax_cross_entropy, rng=0, xp=xp,
        )[1]  # fmt: skip
    want = to_host(results[False][1]["running_var"])
    got = to_host(results[True][1]["running_var"])
    assert got.dtype == numpy.float32
    numpy.testing.assert_allclose(got, want, rtol=5e-3)


def float32_step(net, params, state, opt_state, scaler, x, y, *, optimizer, loss_fn, rng, xp):
    """The float32 step `precision.mixed_precision_step` stands in for: (params, state)."""
    logits, state, cache = cn.apply(net, params, state, x, training=True, rng=rng, xp=xp)
    _, dlogits = losses.value_and_grad(loss_fn, logits, y, xp=xp)
    grads, _ = cn.grad(net, params, cache, dlogits, xp=xp, input_grad=False)
    params, _ = optimizer.update(params, grads, opt_state)
    return params, state
