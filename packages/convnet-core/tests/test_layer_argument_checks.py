"""Layer arguments that are refused with an error naming the layer: malformed
hyper-parameters, parameter and state trees, and inputs the parameters cannot take."""

from __future__ import annotations

import json
import re

import numpy
import pytest
from convnet_core import layers as L
from convnet_core.layers.base import layer_from_config, layer_to_config

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
