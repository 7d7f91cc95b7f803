"""convnet_core.presets: the README model and the best model, their shapes and sizes."""

import convnet_core as cn
import pytest
from convnet_core import layers as L
from convnet_core import presets


def conv_weights(filters, channels, k=3):
    return filters * channels * k * k + filters  # W (out, in, kh, kw) and b


def dense_weights(inputs, units):
    return inputs * units + units  # W (in, units) and b


def shapes_through(layers, input_shape):
    """The per-sample output shape after each layer."""
    shapes = []
    for layer in layers:
        input_shape = tuple(layer.output_shape(input_shape))
        shapes.append(input_shape)
    return shapes


def test_readme_layers_is_the_old_model_with_same_padding():
    layers = presets.readme_layers()
    assert [type(layer).__name__ for layer in layers] == [
        "Conv2D", "Activation", "MaxPool2D", "Conv2D", "Activation", "MaxPool2D",
        "Flatten", "Dense", "Activation", "Dense",
    ]  # fmt: skip
    assert [layers[0].padding, layers[3].padding] == ["same", "same"]
    assert shapes_through(layers, (1, 28, 28)) == [
        (8, 28, 28), (8, 28, 28), (8, 14, 14),
        (16, 14, 14), (16, 14, 14), (16, 7, 7),
        (784,), (64,), (64,), (10,),
    ]  # fmt: skip


def test_readme_layers_parameters_and_output(xp):
    net = L.Sequential(presets.readme_layers())
    params, state = cn.init(net, (1, 28, 28), rng=0, xp=xp)
    expected = conv_weights(8, 1) + conv_weights(16, 8)
    expected += dense_weights(16 * 7 * 7, 64) + dense_weights(64, 10)
    assert cn.tree.size(params) == expected
    x = xp.zeros((2, 1, 28, 28), dtype=xp.float32)
    y, _, _ = cn.apply(net, params, state, x, xp=xp)
    assert y.shape == (2, 10)


def test_best_layers_shapes_and_parameters(xp):
    layers = presets.best_layers()
    net = L.Sequential(layers)
    assert tuple(net.output_shape((1, 28, 28))) == (10,)
    shapes = shapes_through(layers, (1, 28, 28))
    pooled = [s for layer, s in zip(layers, shapes, strict=True) if isinstance(layer, L.MaxPool2D)]
    assert pooled == [(16, 14, 14), (32, 7, 7), (64, 3, 3)]
    params, state = cn.init(net, (1, 28, 28), rng=0, xp=xp)
    expected = 0
    for filters, channels in ((16, 1), (32, 16), (64, 32)):
        expected += conv_weights(filters, channels) + 2 * filters  # BatchNorm gamma, beta
    expected += dense_weights(64 * 3 * 3, 128) + dense_weights(128, 10)
    assert cn.tree.size(params) == expected
    x = xp.zeros((2, 1, 28, 28), dtype=xp.float32)
    y, _, _ = cn.apply(net, params, state, x, xp=xp)
    assert y.shape == (2, 10)


@pytest.mark.parametrize("preset", [presets.readme_layers, presets.best_layers])
def test_num_classes_and_fresh_lists(preset):
    first, second = preset(), preset()
    assert isinstance(first, list)
    assert first == second
    assert first is not second
    first.append(L.Dense(3))
    assert len(second) == len(first) - 1
    assert tuple(L.Sequential(preset(num_classes=3)).output_shape((1, 28, 28))) == (3,)
