"""Layer arguments that are refused with an error naming the layer: malformed
hyper-parameters, parameter and state trees, and inputs the parameters cannot take."""

from __future__ import annotations

import json
import re

import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L
from convnet_core.layers.base import layer_from_config, layer_to_config


def to_numpy(a):
    return a.get() if hasattr(a, "get") else numpy.asarray(a)


# ---------------------------------------------------------------------------------------
# combinators take layers


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: L.Residual("conv"), "Residual body: 'conv' is not a layer"),
        (lambda: L.Residual([L.Conv2D(2)]), "Residual body: [Conv2D("),
        (lambda: L.Residual(L.Conv2D(2), "conv"), "Residual shortcut: 'conv' is not a layer"),
        (lambda: L.Residual(L.Conv2D), "Residual body: <class "),
    ],
)
def test_residual_refuses_what_is_not_a_layer(make, message):
    with pytest.raises(TypeError) as error:
        make()
    assert str(error.value).startswith(message)
    assert str(error.value).endswith(
        "is not a layer (one with output_shape, init, apply and "
        "grad, such as Conv2D(8) or Dense(10))"
    )


def test_residual_keeps_a_missing_shortcut_as_the_identity():
    assert L.Residual(L.Conv2D(2)).shortcut is None


# ---------------------------------------------------------------------------------------
# window geometry: whole numbers only


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: L.Conv2D(2, 2.5),
            "Conv2D kernel_size must be a whole number or a pair of them, got 2.5",
        ),
        (
            lambda: L.Conv2D(2, (3, 2.5)),
            "Conv2D kernel_size must be a whole number or a pair of them, got (3, 2.5)",
        ),
        (
            lambda: L.Conv2D(2, True),
            "Conv2D kernel_size must be a whole number or a pair of them, got True",
        ),
        (
            lambda: L.Conv2D(2, "3"),
            "Conv2D kernel_size must be a whole number or a pair of them, got '3'",
        ),
        (
            lambda: L.Conv2D(2, (3, 3, 3)),
            "Conv2D kernel_size must be a whole number or a pair of them",
        ),
        (
            lambda: L.Conv2D(2, stride=1.5),
            "Conv2D stride must be a whole number or a pair of them, got 1.5",
        ),
        (
            lambda: L.Conv2D(2, padding=1.7),
            "Conv2D padding must be 'same', 'valid', a whole number or a pair of them, got 1.7",
        ),
        (
            lambda: L.MaxPool2D(2.7),
            "MaxPool2D pool_size must be a whole number or a pair of them, got 2.7",
        ),
        (
            lambda: L.MaxPool2D(2, 1.0),
            "MaxPool2D stride must be a whole number or a pair of them, got 1.0",
        ),
        (
            lambda: L.AvgPool2D((2, False)),
            "AvgPool2D pool_size must be a whole number or a pair of them",
        ),
    ],
)
def test_window_geometry_must_be_whole_numbers(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: L.Conv2D(2, 0), "Conv2D kernel_size must be positive, got (0, 0)"),
        (lambda: L.Conv2D(2, stride=(1, -1)), "Conv2D stride must be positive, got (1, -1)"),
        (lambda: L.Conv2D(2, padding=-1), "Conv2D padding must not be negative, got -1"),
        (lambda: L.MaxPool2D((2, 0)), "MaxPool2D pool_size must be positive, got (2, 0)"),
        (lambda: L.AvgPool2D(2, 0), "AvgPool2D stride must be positive, got (0, 0)"),
    ],
)
def test_window_geometry_out_of_range_names_the_layer(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_window_geometry_takes_numpy_integers_and_json_lists():
    conv = L.Conv2D(2, numpy.int64(3), stride=[numpy.int32(2), 1], padding=numpy.uint8(1))
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (2, 1), 1)
    assert all(type(n) is int for n in (*conv.kernel_size, *conv.stride, conv.padding))
    assert L.Conv2D(2, [3, 5], padding=[1, 2]).padding == (1, 2)
    assert L.MaxPool2D([3, 2], stride=None).pool_size == (3, 2)
    config = layer_to_config(L.Conv2D(2, (3, 5), stride=2, padding=(1, 2)))
    assert config["config"]["kernel_size"] == [3, 5]
    assert layer_from_config(json.loads(json.dumps(config))) == L.Conv2D(
        2, (3, 5), stride=2, padding=(1, 2)
    )


# ---------------------------------------------------------------------------------------
# BatchNorm2D needs a batch to normalise over


@pytest.mark.parametrize("shape", [(1, 2, 1, 1), (1, 3, 1, 1)])
def test_batchnorm_refuses_one_value_per_channel_when_training(shape, xp):
    layer = L.BatchNorm2D()
    params, state = cn.init(layer, shape[1:], rng=0, xp=xp)
    x = xp.ones(shape, dtype="float32")
    message = (
        "BatchNorm2D(momentum=0.9, eps=1e-05): expected more than 1 value per channel when "
        f"training, got an input of shape {shape}"
    )
    with pytest.raises(L.ShapeError) as error:
        cn.apply(layer, params, state, x, training=True, xp=xp)
    assert str(error.value) == message
    net = L.Sequential([L.Conv2D(shape[1], (1, 1)), L.BatchNorm2D()])
    params, state = cn.init(net, shape[1:], rng=0, xp=xp)
    with pytest.raises(L.ShapeError) as error:
        cn.apply(net, params, state, x, training=True, xp=xp)
    assert str(error.value) == "layer 1 of Sequential: " + message


def test_batchnorm_takes_one_value_per_channel_at_inference_and_two_when_training(xp):
    layer = L.BatchNorm2D()
    params, state = cn.init(layer, (2, 1, 1), rng=0, xp=xp)
    state = {
        "running_mean": xp.asarray([1.0, -1.0], "float32"),
        "running_var": state["running_var"],
    }
    y, _, _ = cn.apply(layer, params, state, xp.full((1, 2, 1, 1), 3.0, "float32"), xp=xp)
    numpy.testing.assert_allclose(to_numpy(y).ravel(), [2, 4] / numpy.sqrt(1 + 1e-5), rtol=1e-6)
    x = xp.asarray([[[[1.0]], [[2.0]]], [[[3.0]], [[6.0]]]], "float32")  # (2, 2, 1, 1)
    y, new_state, _ = cn.apply(layer, params, state, x, training=True, xp=xp)
    numpy.testing.assert_allclose(to_numpy(y).ravel(), [-1, -1, 1, 1], atol=1e-4)
    # unbiased batch variances 2 and 8, weighted 0.1 against the running 1
    numpy.testing.assert_allclose(to_numpy(new_state["running_var"]), [1.1, 1.7], rtol=1e-6)
