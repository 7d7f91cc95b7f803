"""init, apply and grad refuse an `xp` that is not an array module, and apply a batch that is
not an array of it, with a TypeError that says what they take."""

from __future__ import annotations

import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L


def small_net():
    return L.Sequential((L.Flatten(), L.Dense(4)))


XP_WANT = (
    "{function}: xp must be the array module, numpy or cupy (backend.array_module('cpu') "
    "or backend.array_module('cuda') gives it for a device name), got {got}"
)


@pytest.mark.parametrize("xp_given", ["numpy", None, numpy.ndarray])
def test_init_apply_and_grad_refuse_an_xp_that_is_not_a_module(xp_given):
    net = small_net()
    params, state = cn.init(net, (1, 8, 8), rng=0)
    x = numpy.ones((2, 1, 8, 8), numpy.float32)
    y, _, cache = cn.apply(net, params, state, x, training=True)
    calls = {
        "init": lambda: cn.init(net, (1, 8, 8), rng=0, xp=xp_given),
        "apply": lambda: cn.apply(net, params, state, x, xp=xp_given),
        "grad": lambda: cn.grad(net, params, cache, numpy.ones_like(y), xp=xp_given),
    }
    for function, call in calls.items():
        with pytest.raises(TypeError) as error:
            call()
        assert str(error.value) == XP_WANT.format(function=function, got=repr(xp_given))


@pytest.mark.parametrize(
    "batch, kind",
    [
        (numpy.ones((2, 1, 8, 8)).tolist(), "list"),
        (tuple(numpy.ones((2, 1, 8, 8)).tolist()), "tuple"),
        (1.0, "float"),
        (None, "NoneType"),
    ],
)
def test_apply_refuses_a_batch_that_is_not_an_array_of_xp(batch, kind, xp):
    net = small_net()
    params, state = cn.init(net, (1, 8, 8), rng=0, xp=xp)
    want = (
        f"apply: x must be an array of {xp.__name__} (the batch, shaped (N, *input_shape)), "
        f"got {kind}; convert it with {xp.__name__}.asarray(x)"
    )
    for training in (False, True):
        with pytest.raises(TypeError) as error:
            cn.apply(net, params, state, batch, training=training, xp=xp)
        assert str(error.value) == want


def test_apply_on_cupy_refuses_a_host_batch(xp, kernel_build_dir):
    from cupy_on_numpy import make_cupy_on_numpy

    device_xp = xp if xp is not numpy else make_cupy_on_numpy(kernel_build_dir)  # on the CPU
    net = small_net()
    params, state = cn.init(net, (1, 8, 8), rng=0, xp=device_xp)
    with pytest.raises(TypeError) as error:
        cn.apply(net, params, state, numpy.ones((2, 1, 8, 8), numpy.float32), xp=device_xp)
    assert str(error.value) == (
        "apply: x must be an array of cupy (the batch, shaped (N, *input_shape)), got "
        "numpy.ndarray; convert it with cupy.asarray(x)"
    )


def test_apply_takes_the_array_module_from_array_module(xp):
    from convnet_core import backend

    net = small_net()
    params, state = cn.init(net, (1, 8, 8), rng=0, xp=backend.array_module("cpu"))
    y, _, _ = cn.apply(net, params, state, numpy.ones((2, 1, 8, 8), numpy.float32))
    assert y.shape == (2, 4)
