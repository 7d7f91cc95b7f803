"""Gradients of the wrong shape are errors that name who made them and both shapes, never
numbers silently broadcast: the dy given to `cn.grad`, a layer's dx and dparams, a
loss's gradient (in fit, mixed precision and `Model.loss`), the gradient given to
`Model.backward`, and the gradients given to an optimizer.

These checks compare shapes only, so they run in every step on a GPU too (the tests-cuda
sessions run this file; test_cuda_equivalence.py checks that a step never waits)."""

from __future__ import annotations

import attrs
import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L
from convnet_core import losses, optim
from convnet_core import tree as T
from convnet_core.layers.base import ShapeError, Tape


def host_leaves(tree):
    return [numpy.asarray(leaf) for leaf in T.leaves(cn.backend.to_host(tree))]


def batch(xp, shape, n=8, seed=0):
    rng = numpy.random.default_rng(seed)
    return xp.asarray(rng.standard_normal((n, *shape)).astype("float32"))


# ---------------------------------------------------------------------------------------
# dy against the output: cn.grad


LAYERS = [
    (L.Activation("relu"), (3,)),
    (L.Activation("softmax"), (3,)),
    (L.Activation("tanh"), (2, 4, 4)),
    (L.MaxPool2D(), (2, 4, 4)),
    (L.MaxPool2D((3, 3), stride=1), (2, 5, 5)),
    (L.AvgPool2D(), (2, 4, 4)),
    (L.BatchNorm2D(), (2, 4, 4)),
    (L.Dropout(0.5), (3,)),
    (L.Dropout(0.0), (3,)),
    (L.GlobalAvgPool2D(), (2, 4, 4)),
    (L.Dense(3), (5,)),
    (L.Conv2D(2, (3, 3)), (1, 5, 5)),
    (L.Flatten(), (2, 3, 3)),
    (L.Residual(L.Conv2D(2, (3, 3))), (2, 4, 4)),
]


@pytest.mark.parametrize(("layer", "shape"), LAYERS, ids=repr)
def test_a_dy_unlike_the_output_is_refused_by_every_layer(xp, layer, shape):
    # dy with one sample where the output has 8 would broadcast through most layers
    params, state = cn.init(layer, shape, rng=0, xp=xp)
    y, _, cache = cn.apply(layer, params, state, batch(xp, shape), training=True, rng=1, xp=xp)
    wrong = xp.ones((1, *y.shape[1:]), dtype="float32")
    with pytest.raises(ShapeError) as error:
        cn.grad(layer, params, cache, wrong, xp=xp)
    assert str(error.value) == (
        f"{layer!r}.grad expected dy of shape {tuple(y.shape)} (the output's) but got "
        f"{tuple(wrong.shape)}"
    )
    dparams, dx = cn.grad(layer, params, cache, xp.ones_like(y), xp=xp)  # the right one
    assert dx.shape == (8, *shape)


def test_a_dy_unlike_the_output_of_a_sequential_names_its_last_layer(xp):
    net = L.Sequential((L.Dense(3), L.Activation("relu")))
    params, state = cn.init(net, (4,), rng=0, xp=xp)
    y, _, cache = cn.apply(net, params, state, batch(xp, (4,)), training=True, xp=xp)
    assert y.shape == (8, 3)
    with pytest.raises(ShapeError) as error:
        cn.grad(net, params, cache, xp.ones((1, 3), dtype="float32"), xp=xp)
    assert str(error.value) == (
        "layer 1 of Sequential: Activation(name='relu', alpha=0.01).grad expected dy of "
        "shape (8, 3) (the output's) but got (1, 3)"
    )


def test_the_cache_of_apply_carries_the_shapes_it_is_checked_against(xp):
    layer = L.MaxPool2D()
    params, state = cn.init(layer, (2, 4, 6), rng=0, xp=xp)
    _, _, cache = cn.apply(layer, params, state, batch(xp, (2, 4, 6), n=3), training=True, xp=xp)
    assert isinstance(cache, Tape)
    assert (cache.x_shape, cache.y_shape) == ((3, 2, 4, 6), (3, 2, 2, 3))
    net = L.Sequential((L.Flatten(), L.Dense(2)))
    params, state = cn.init(net, (2, 4, 6), rng=0, xp=xp)
    _, _, cache = cn.apply(net, params, state, batch(xp, (2, 4, 6), n=3), training=True, xp=xp)
    assert [type(c) for c in cache] == [Tape, Tape]  # one per layer
    assert [c.y_shape for c in cache] == [(3, 48), (3, 2)]


def test_grad_refuses_a_cache_that_apply_did_not_return(xp):
    layer = L.Dense(2)
    params, state = cn.init(layer, (3,), rng=0, xp=xp)
    x = batch(xp, (3,))
    _, _, raw = layer.apply(params, state, x, training=True, rng=None, xp=xp)
    with pytest.raises(TypeError) as error:
        cn.grad(layer, params, raw, xp.ones((8, 2), dtype="float32"), xp=xp)
    assert str(error.value) == (
        "grad of Dense(units=2, use_bias=True) takes the cache that "
        "convnet_core.apply(training=True) returned, not a ndarray (layer.grad takes "
        "layer.apply's cache)"
    )


# ---------------------------------------------------------------------------------------
# a layer's own gradients: dx and dparams


@attrs.frozen
class SloppyScale:
    """y = s · x with s of shape (1,), and a planted bug in its backward pass:
    `ds_per_feature` forgets to sum ds over the features (ds (F,) for s (1,)),
    `dx_per_sample` returns dx summed over the features (N,) instead of (N, F)."""

    ds_per_feature: bool = True
    dx_per_sample: bool = False

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        return {"s": xp.ones((1,), dtype=dtype)}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        return params["s"] * x, state, (x if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        ds = (dy * cache).sum(axis=0)  # (F,)
        if not self.ds_per_feature:
            ds = ds.sum().reshape(1)  # (1,), right
        dx = params["s"] * dy
        if self.dx_per_sample:
            dx = dx.sum(axis=1)
        return {"s": ds}, (dx if input_grad else None)


def test_a_layer_returning_dparams_unlike_its_params_is_named(xp):
    layer = SloppyScale()
    params, state = cn.init(layer, (16,), rng=0, xp=xp)
    y, _, cache = cn.apply(layer, params, state, batch(xp, (16,)), training=True, xp=xp)
    with pytest.raises(ShapeError) as error:
        cn.grad(layer, params, cache, xp.ones_like(y), xp=xp)
    assert str(error.value) == (
        "SloppyScale(ds_per_feature=True, dx_per_sample=False).grad: the gradient of "
        "parameter 's' has shape (16,) but the parameter has shape (1,)"
    )


def test_a_layer_returning_dx_unlike_its_input_is_named_not_the_layer_before(xp):
    net = L.Sequential((L.Dense(16), SloppyScale(ds_per_feature=False, dx_per_sample=True)))
    params, state = cn.init(net, (4,), rng=0, xp=xp)
    y, _, cache = cn.apply(net, params, state, batch(xp, (4,)), training=True, xp=xp)
    with pytest.raises(ShapeError) as error:
        cn.grad(net, params, cache, xp.ones_like(y), xp=xp, input_grad=False)
    assert str(error.value) == (
        "layer 1 of Sequential: SloppyScale(ds_per_feature=False, dx_per_sample=True).grad "
        "returned dx of shape (8,) for an input of shape (8, 16); dx must be shaped like "
        "the input"
    )


@attrs.frozen
class WideningScale(SloppyScale):
    """SloppyScale with a right shape but a planted dtype bug: ds comes back in float64."""

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        _, dx = SloppyScale(ds_per_feature=False).grad(
            params, cache, dy, xp=xp, input_grad=input_grad
        )
        ds = (dy * cache).sum().reshape(1).astype("float64")  # (1,), but float64
        return {"s": ds}, dx


MISSHAPEN = "has shape (16,) but the parameter has shape (1,)"
MISTYPED = "has dtype float64 but the parameter has dtype float32"


@pytest.mark.parametrize(
    ("layer", "optimizer", "words"),
    [
        # with SGD the parameter used to become (16,); with Adam a bare broadcast error
        (SloppyScale(), "sgd", MISSHAPEN),
        (SloppyScale(), "adam", MISSHAPEN),
        # fit's steps leave the optimizer's own checks out: the layer check catches it
        (WideningScale(), "sgd", MISTYPED),
    ],
)
def test_fit_stops_at_a_layer_whose_dparams_are_wrong(xp, layer, optimizer, words):
    model = cn.Model([L.Dense(16), layer, L.Dense(2)], device=xp, seed=0)
    model.compile(optimizer=optimizer, lr=0.1)
    x = numpy.random.default_rng(0).random((32, 4), dtype=numpy.float32)
    with pytest.raises(ShapeError) as error:
        model.fit((x, numpy.arange(32) % 2), epochs=1, batch_size=8, verbose=False)
    assert str(error.value) == (
        f"layer 1 of Sequential: {layer!r}.grad: the gradient of parameter 's' {words}"
    )
    s = model.params[1]["s"]
    assert (s.shape, s.dtype, model.epoch) == ((1,), numpy.float32, 0)


# ---------------------------------------------------------------------------------------
# the optimizer: gradients against parameters, whoever made them


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_every_optimizer_refuses_gradients_unlike_the_parameters(xp, name):
    params = ({"W": xp.ones((4, 16), "float32")}, {"s": xp.ones((1,), "float32")})
    opt = optim.get(name, lr=0.1)
    opt_state = opt.init(params)
    grads = ({"W": xp.ones((4, 16), "float32")}, {"s": xp.ones((16,), "float32")})
    with pytest.raises(ValueError) as error:
        opt.update(params, grads, opt_state)
    assert str(error.value) == (
        f"{name}.update: the gradient of parameter '1/s' has shape (16,) but the parameter "
        "has shape (1,)"
    )
    with pytest.raises(ValueError, match=r"update: no gradient for parameter '0/W'"):
        opt.update_if(xp.asarray(True), params, ({}, grads[1]), opt_state)


def test_model_step_refuses_gradients_unlike_the_parameters(xp):
    model = cn.Model([L.Dense(2)], device=xp, seed=0).compile(optimizer="sgd", lr=0.1)
    model.build((3,))
    model.forward(batch(xp, (3,)), training=True)
    model.backward(xp.ones((8, 2), dtype="float32"))
    model.grads = ({"W": model.grads[0]["W"], "b": xp.ones((1, 2), "float32")},)
    with pytest.raises(ValueError) as error:
        model.step()
    assert str(error.value) == (
        "sgd.update: the gradient of parameter '0/b' has shape (1, 2) but the parameter "
        "has shape (2,)"
    )
    assert model.params[0]["b"].shape == (2,)


MISMATCHES = [
    # (params, grads, the words); tuples of ints are array shapes
    (
        {"W": (2, 3)},
        {"W": (3, 2)},
        "the gradient of parameter 'W' has shape (3, 2) but the parameter has shape (2, 3)",
    ),
    ({"W": (2,), "b": (2,)}, {"W": (2,)}, "no gradient for parameter 'b'"),
    ({"W": (2,)}, {"W": (2,), "c": (1,)}, "a gradient for 'c', which is not a parameter"),
    (({}, {"W": (2,)}), ({},), "the gradients are a tuple of 1 but the parameters a tuple of 2"),
    (
        ({"W": (2,)},),
        ([(2,)],),
        "the gradients at '0' are a list of 1 but the parameters are a dict",
    ),
    (({"W": (2,)},), ({"W": None},), "the gradient of parameter '0/W' is None, not an array"),
    ({"W": ()}, {"W": 1.5}, None),  # a Python number for a 0-d parameter
]


@pytest.mark.parametrize(("params", "grads", "words"), MISMATCHES)
def test_grad_mismatch_names_the_first_difference(params, grads, words):
    def arrays(tree):
        def leaf(shape):
            return numpy.zeros(shape) if isinstance(shape, tuple) else shape

        if isinstance(tree, dict):
            return {key: arrays(value) for key, value in tree.items()}
        if isinstance(tree, list):
            return [arrays(value) for value in tree]
        if isinstance(tree, tuple) and not all(isinstance(d, int) for d in tree):
            return tuple(arrays(value) for value in tree)
        return leaf(tree)

    assert T.grad_mismatch(arrays(params), arrays(grads)) == words


# ---------------------------------------------------------------------------------------
# a loss's gradient against the predictions, and Model.backward's


def squared_error_summed_over_the_batch(predictions, targets, *, xp):
    """A planted bug: the gradient is averaged over the batch, shape (1, outputs)."""
    diff = predictions - xp.asarray(targets, dtype=predictions.dtype)
    return (diff * diff).mean(), 2 * diff.mean(axis=0, keepdims=True)


LOSS_ERROR = (
    "loss 'squared_error_summed_over_the_batch' returned a gradient of shape (1, 2) for "
    "predictions of shape (8, 2); the gradient of a loss must have the predictions' shape"
)


def regression(xp, precision=None):
    model = cn.Model([L.Dense(2)], device=xp, seed=0)
    model.compile(loss=squared_error_summed_over_the_batch, optimizer="sgd", precision=precision)
    rng = numpy.random.default_rng(0)
    return model, rng.random((32, 3), dtype=numpy.float32), rng.random((32, 2))


@pytest.mark.filterwarnings("ignore::convnet_core.precision.MixedPrecisionOnNumPyWarning")
@pytest.mark.parametrize("precision", ["float32", "mixed"])
def test_fit_refuses_a_loss_gradient_unlike_the_predictions(xp, precision):
    model, x, targets = regression(xp, precision)
    model.build((3,))
    before = host_leaves(model.params)
    with pytest.raises(ValueError) as error:
        model.fit((x, targets), epochs=1, batch_size=8, verbose=False)
    assert str(error.value) == LOSS_ERROR
    for kept, want in zip(host_leaves(model.params), before, strict=True):
        numpy.testing.assert_array_equal(kept, want)


def test_value_and_grad_names_a_loss_by_the_name_given(xp):
    p = xp.ones((4, 3), dtype="float32")
    with pytest.raises(ValueError, match=r"^loss 'mine' returned a gradient of shape \(\) for"):
        losses.value_and_grad(lambda p, t, *, xp: (p.sum(), p.sum()), p, p, xp=xp, name="mine")
    value, grad = losses.value_and_grad(losses.mse, p, p, xp=xp)
    assert grad.shape == (4, 3) and float(value) == 0.0


def test_the_custom_loop_refuses_misshapen_loss_and_output_gradients(xp):
    model, x, targets = regression(xp)
    predictions = model.forward(x[:8], training=True)
    with pytest.raises(ValueError) as error:
        model.loss.forward(predictions, targets[:8])
    assert str(error.value) == LOSS_ERROR
    with pytest.raises(ShapeError) as error:
        model.backward(xp.ones((1, 2), dtype="float32"))
    assert str(error.value) == (
        "Model.backward expected grad of shape (8, 2) (the output's of the last forward) "
        "but got (1, 2)"
    )
    assert model.grads is None  # nothing was stored
