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

    module = backend.array_module("cpu" if xp is numpy else "cuda")  # the device under test
    assert module is xp
    net = small_net()
    params, state = cn.init(net, (1, 8, 8), rng=0, xp=module)
    y, _, _ = cn.apply(net, params, state, module.ones((2, 1, 8, 8), "float32"), xp=module)
    assert y.shape == (2, 4) and isinstance(y, xp.ndarray)


def test_apply_on_numpy_says_how_to_bring_a_device_batch_to_the_host(kernel_build_dir):
    from cupy_on_numpy import make_cupy_on_numpy

    cupy = make_cupy_on_numpy(kernel_build_dir)  # a device array refuses numpy.asarray
    net = small_net()
    params, state = cn.init(net, (1, 8, 8), rng=0, xp=numpy)
    with pytest.raises(TypeError) as error:
        cn.apply(net, params, state, cupy.ones((2, 1, 8, 8), dtype="float32"), xp=numpy)
    assert str(error.value).endswith("got cupy.ndarray; convert it with x.get()")
    with pytest.raises(TypeError, match=r"got dict; convert it with numpy\.asarray\(x\)"):
        cn.apply(net, params, state, {"x": 1}, xp=numpy)
