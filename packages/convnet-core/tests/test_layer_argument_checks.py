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


# ---------------------------------------------------------------------------------------
# parameters and state shaped for the layer

BN = "BatchNorm2D(momentum=0.9, eps=1e-05)"


def replaced(tree, **entries):
    return {**tree, **entries}


def malformed_cases(xp):
    """(layer, params, state, x, what follows the layer's repr in the error) for
    parameters or state the layer cannot take."""
    f32 = "float32"
    dense, conv, bn = L.Dense(3), L.Conv2D(4), L.BatchNorm2D()
    unbiased = L.Conv2D(4, use_bias=False)
    dense_p, _ = cn.init(dense, (5,), rng=0, xp=xp)
    conv_p, _ = cn.init(conv, (2, 6, 6), rng=0, xp=xp)
    bn_p, bn_s = cn.init(bn, (3, 2, 2), rng=0, xp=xp)
    flat, image = xp.ones((2, 5), f32), xp.ones((2, 2, 6, 6), f32)
    bn_x = xp.ones((2, 3, 2, 2), f32)
    one = xp.ones((1,), f32)
    return [
        (dense, replaced(dense_p, b=one), {}, flat, "parameter 'b' of shape (3,) but got (1,)"),
        (dense, replaced(dense_p, W=xp.ones((5, 4), f32)), {}, flat,
         "parameter 'W' of shape (*, 3) but got (5, 4)"),
        (dense, replaced(dense_p, W=xp.ones((15,), f32)), {}, flat,
         "parameter 'W' of shape (*, 3) but got (15,)"),
        (conv, replaced(conv_p, b=one), {}, image, "parameter 'b' of shape (4,) but got (1,)"),
        (conv, replaced(conv_p, W=xp.ones((4, 2, 1, 1), f32)), {}, image,
         "parameter 'W' of shape (4, *, 3, 3) but got (4, 2, 1, 1)"),
        (conv, {"W": conv_p["W"]}, {}, image, "parameter keys ['W', 'b'] but got ['W']"),
        (unbiased, conv_p, {}, image, "parameter keys ['W'] but got ['W', 'b']"),
        (dense, None, {}, flat, "parameter keys ['W', 'b'] but got None"),
        (dense, (dense_p,), {}, flat, "parameter keys ['W', 'b'] but got a tuple"),
        (bn, replaced(bn_p, gamma=one), bn_s, bn_x, "parameter 'gamma' of shape (3,) but got (1,)"),
        (bn, replaced(bn_p, beta=one), bn_s, bn_x, "parameter 'beta' of shape (3,) but got (1,)"),
        (bn, bn_p, replaced(bn_s, running_mean=one), bn_x,
         "state entry 'running_mean' of shape (3,) but got (1,)"),
        (bn, bn_p, replaced(bn_s, running_var=one), bn_x,
         "state entry 'running_var' of shape (3,) but got (1,)"),
        (bn, bn_p, {"running_mean": one, "running_var": one}, bn_x,
         "state entry 'running_mean' of shape (3,) but got (1,)"),
        (bn, bn_p, None, bn_x, "state entry keys ['running_mean', 'running_var'] but got None"),
    ]  # fmt: skip


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("case", range(15))
def test_malformed_parameters_and_state_name_the_entry_and_both_shapes(case, training, xp):
    layer, params, state, x, message = malformed_cases(xp)[case]
    with pytest.raises(L.ShapeError) as error:
        cn.apply(layer, params, state, x, training=training, xp=xp)
    assert str(error.value) == f"{layer!r} expected {message}"


def test_batchnorm_blames_the_input_when_its_parameters_agree(xp):
    layer = L.BatchNorm2D()
    params, state = cn.init(layer, (3, 2, 2), rng=0, xp=xp)
    with pytest.raises(L.ShapeError) as error:
        cn.apply(layer, params, state, xp.ones((2, 4, 2, 2), "float32"), xp=xp)
    assert str(error.value) == f"{BN} expected input of shape (N, 3, *, *) but got (2, 4, 2, 2)"


def test_a_malformed_parameter_in_a_network_names_the_layer(xp):
    net = L.Sequential([L.Conv2D(4), L.Flatten(), L.Dense(3)])
    params, state = cn.init(net, (2, 6, 6), rng=0, xp=xp)
    params = (params[0], params[1], replaced(params[2], b=xp.ones((1,), "float32")))
    with pytest.raises(L.ShapeError) as error:
        cn.apply(net, params, state, xp.ones((2, 2, 6, 6), "float32"), xp=xp)
    assert str(error.value) == (
        f"layer 2 of Sequential: {net.layers[2]!r} expected parameter 'b' of shape (3,) "
        "but got (1,)"
    )


# ---------------------------------------------------------------------------------------
# combinators: one entry per child


def per_layer(what, got):
    """The error of the net of `small_net` for params, state or a cache of other length."""
    net = "Sequential(Conv2D, Flatten, Dense)"
    return f"{net} expected {what} with one entry per layer (3) but got {got}"


def small_net(xp):
    net = L.Sequential([L.Conv2D(4, 3), L.Flatten(), L.Dense(3)])
    params, state = cn.init(net, (1, 4, 4), rng=0, xp=xp)
    return net, params, state, xp.ones((2, 1, 4, 4), "float32")


@pytest.mark.parametrize("training", [False, True])
def test_sequential_params_and_state_need_one_entry_per_layer(training, xp):
    net, params, state, x = small_net(xp)
    cases = [
        (params[:-1], state, per_layer("params", "a tuple of 2")),
        (params, None, per_layer("state", "None")),
        (params, (*state, {}), per_layer("state", "a tuple of 4")),
        (params[0], state, per_layer("params", "a dict")),
    ]
    for p, s, message in cases:
        with pytest.raises(L.ShapeError) as error:
            cn.apply(net, p, s, x, training=training, xp=xp)
        assert str(error.value) == message
    y, _, _ = cn.apply(net, list(params), list(state), x, training=training, xp=xp)
    assert y.shape == (2, 3)


def test_sequential_grad_needs_its_own_cache_and_one_param_entry_per_layer(xp):
    net, params, state, x = small_net(xp)
    y, _, cache = cn.apply(net, params, state, x, training=True, xp=xp)
    dy = xp.ones_like(y)
    other = L.Sequential([L.Flatten(), L.Dense(3)])
    other_params, other_state = cn.init(other, (1, 4, 4), rng=0, xp=xp)
    _, _, other_cache = cn.apply(other, other_params, other_state, x, training=True, xp=xp)
    cases = [
        (params[:-1], cache, per_layer("params", "a tuple of 2")),
        (params, other_cache, per_layer("a cache", "a tuple of 2")),
        (params, cache[0], per_layer("a cache", "a Tape")),
    ]
    for p, c, message in cases:
        with pytest.raises(L.ShapeError) as error:
            cn.grad(net, p, c, dy, xp=xp)
        assert str(error.value) == message


def test_a_nested_combinator_with_a_wrong_tree_is_named_by_its_place(xp):
    inner = L.Sequential([L.Conv2D(2), L.Activation("relu")])
    net = L.Sequential([inner, L.Flatten(), L.Dense(3)])
    params, state = cn.init(net, (1, 4, 4), rng=0, xp=xp)
    x = xp.ones((2, 1, 4, 4), "float32")
    with pytest.raises(L.ShapeError) as error:
        cn.apply(net, ((params[0][0],), *params[1:]), state, x, xp=xp)
    assert str(error.value) == (
        "layer 0 of Sequential: Sequential(Conv2D, Activation) expected params with one entry "
        "per layer (2) but got a tuple of 1"
    )


def test_residual_params_state_and_cache_need_the_body_and_the_shortcut(xp):
    net = L.Residual(L.Conv2D(2), L.Conv2D(2, (1, 1)))
    name = "Residual(body=Conv2D, shortcut=Conv2D)"
    params, state = cn.init(net, (2, 4, 4), rng=0, xp=xp)
    x = xp.ones((2, 2, 4, 4), "float32")
    with pytest.raises(L.ShapeError) as error:
        cn.apply(net, (params["body"], params["shortcut"]), state, x, xp=xp)
    assert str(error.value) == (
        f"{name} expected parameter keys ['body', 'shortcut'] but got a tuple"
    )
    with pytest.raises(L.ShapeError) as error:
        cn.apply(net, params, {"body": {}}, x, training=True, xp=xp)
    assert (
        str(error.value)
        == f"{name} expected state entry keys ['body', 'shortcut'] but got ['body']"
    )
    y, _, cache = cn.apply(net, params, state, x, training=True, xp=xp)
    conv_cache = cn.apply(L.Conv2D(2), params["body"], {}, x, training=True, xp=xp)[2]
    with pytest.raises(L.ShapeError) as error:
        cn.grad(net, params, conv_cache, xp.ones_like(y), xp=xp)
    assert str(error.value) == (
        f"{name} expected a cache with one entry per path (2) but got a tuple of 3"
    )
    with pytest.raises(L.ShapeError) as error:
        cn.grad(net, {"body": params["body"]}, cache, xp.ones_like(y), xp=xp)
    assert (
        str(error.value) == f"{name} expected parameter keys ['body', 'shortcut'] but got ['body']"
    )


# ---------------------------------------------------------------------------------------
# a floating input has the parameters' dtype


def dtype_message(layer, want, got, name="W"):
    return (
        f"{layer!r} expected input of dtype {want} (that of parameter {name!r}) but got {got}; "
        f"cast the batch with x.astype({want!r})"
    )


@pytest.mark.parametrize(
    ("params_dtype", "x_dtype"),
    [
        ("float32", "float64"),
        ("float32", "float16"),
        ("float64", "float32"),
        ("float32", "int64"),  # NumPy's default integers: float32 arithmetic makes float64
        ("float32", "int32"),
    ],
)
@pytest.mark.parametrize("training", [False, True])
def test_a_floating_input_of_another_dtype_is_refused_at_the_first_layer_with_params(
    params_dtype, x_dtype, training, xp
):
    net, _, _, _ = small_net(xp)
    params, state = cn.init(net, (1, 4, 4), rng=0, xp=xp, dtype=params_dtype)
    x = xp.ones((2, 1, 4, 4), x_dtype)
    with pytest.raises(L.ShapeError) as error:
        cn.apply(net, params, state, x, training=training, xp=xp)
    assert str(error.value) == "layer 0 of Sequential: " + dtype_message(
        net.layers[0], params_dtype, x_dtype
    )


@pytest.mark.parametrize(
    ("layers", "index", "name"),
    [
        ([L.Flatten(), L.Dense(3)], 1, "W"),
        ([L.MaxPool2D(), L.BatchNorm2D(), L.Flatten(), L.Dense(3)], 1, "gamma"),
        ([L.Residual(L.Conv2D(1)), L.Flatten(), L.Dense(3)], 0, "W"),
    ],
    ids=["Dense", "BatchNorm2D", "Residual"],
)
def test_the_dtype_error_names_the_first_layer_with_params(layers, index, name, xp):
    net = L.Sequential(layers)
    params, state = cn.init(net, (1, 4, 4), rng=0, xp=xp)
    with pytest.raises(L.ShapeError) as error:
        cn.apply(net, params, state, xp.ones((2, 1, 4, 4), "float64"), xp=xp)
    layer = net.layers[index]
    first = layer.body if isinstance(layer, L.Residual) else layer
    path = f"layer {index} of Sequential: " + (
        "body of Residual: " if isinstance(layer, L.Residual) else ""
    )
    expected = path + dtype_message(first, "float32", "float64", name)
    assert str(error.value) == expected


@pytest.mark.parametrize("dtype", ["uint8", "int16", "bool"])
def test_integer_images_pass_into_the_first_layer(xp, dtype):
    # arithmetic with float32 weights gives float32 for these
    net, params, state, _ = small_net(xp)
    images = xp.asarray(
        numpy.arange(32).reshape(2, 1, 4, 4) % (2 if dtype == "bool" else 256), dtype
    )
    y, _, cache = cn.apply(net, params, state, images, training=True, xp=xp)
    assert y.dtype == numpy.float32
    expected, _, _ = cn.apply(net, params, state, images.astype("float32"), xp=xp)
    numpy.testing.assert_allclose(to_numpy(y), to_numpy(expected), rtol=1e-6)
    grads, _ = cn.grad(net, params, cache, xp.ones_like(y), xp=xp, input_grad=False)
    assert all(g.dtype == numpy.float32 for g in cn.tree.leaves(grads))
