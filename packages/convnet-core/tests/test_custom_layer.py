"""A user-defined layer: written as an attrs class, registered, gradient-checked, and
trained inside a Sequential with a hand-written SGD step."""

from __future__ import annotations

import attrs
import convnet_core as cn
import numpy
from convnet_core import layers as L
from convnet_core import losses


@cn.register_layer
@attrs.frozen
class Scale:
    """y = x * s with a learnable per-feature scale s, initialised to `factor`.

    Shapes: x (N, F) -> y (N, F); params s (F,). Backward: ds = Σₙ dy x, dx = dy s.
    """

    factor: float = 1.0

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        return {"s": xp.full(input_shape, self.factor, dtype=dtype)}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        return x * params["s"], state, (x if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        x = cache
        return {"s": (dy * x).sum(axis=0)}, (dy * params["s"] if input_grad else None)


def test_scale_is_registered_and_round_trips():
    assert L.registered_layers()["Scale"] is Scale
    net = L.Sequential([L.Dense(4), Scale(0.5)])
    config = L.layer_to_config(net)
    assert config["config"]["layers"][1] == {"class": "Scale", "config": {"factor": 0.5}}
    assert L.layer_from_config(config) == net


def test_scale_gradients(xp):
    layer = Scale(factor=1.5)
    params, state = cn.init(layer, (5,), rng=0, xp=xp, dtype="float64")
    params["s"] = xp.asarray(numpy.random.default_rng(1).uniform(0.5, 2.0, 5))
    x = xp.asarray(numpy.random.default_rng(2).standard_normal((3, 5)))
    report = cn.check_grad(layer, params, state, x, xp=xp)
    assert report.ok and report.max_error < 1e-7, str(report)
    assert set(report.errors) == {"s", "input"}


def test_scale_inside_a_network_gradients(xp):
    net = L.Sequential([L.Dense(4), Scale(2.0), L.Activation("tanh"), L.Dense(3)])
    params, state = cn.init(net, (6,), rng=0, xp=xp, dtype="float64")
    x = xp.asarray(numpy.random.default_rng(3).standard_normal((4, 6)))
    report = cn.check_grad(net, params, state, x, xp=xp)
    assert report.ok and "1/s" in report.errors, str(report)


def test_scale_trains_in_a_sequential_with_hand_written_sgd(xp):
    # a linearly separable 3-class problem in 2-D
    rng = numpy.random.default_rng(0)
    centres = numpy.array([[2.0, 0.0], [-1.0, 2.0], [-1.0, -2.0]])
    labels = rng.integers(0, 3, 300)
    x = (centres[labels] + 0.5 * rng.standard_normal((300, 2))).astype("float32")
    x, labels = xp.asarray(x), xp.asarray(labels)
    net = L.Sequential([L.Dense(16), Scale(0.5), L.Activation("relu"), L.Dense(3)])
    params, state = cn.init(net, (2,), rng=1, xp=xp)
    start_scale = cn.tree.flatten(params)["1/s"].copy()

    def loss_and_grads(params):
        logits, _, cache = cn.apply(net, params, state, x, training=True, xp=xp)
        loss, dlogits = losses.softmax_cross_entropy(logits, labels, xp=xp)
        grads, _ = cn.grad(net, params, cache, dlogits, xp=xp, input_grad=False)
        return float(loss), grads

    first, _ = loss_and_grads(params)
    for _ in range(100):
        loss, grads = loss_and_grads(params)
        params = cn.tree.map(lambda p, g: p - numpy.float32(0.5) * g, params, grads)
    last, _ = loss_and_grads(params)
    assert last < 0.25 * first, (first, last)
    assert cn.tree.flatten(params)["1/s"].dtype == numpy.float32
    assert not numpy.allclose(
        numpy.asarray(cn.backend.to_host(cn.tree.flatten(params)["1/s"])),
        numpy.asarray(cn.backend.to_host(start_scale)),
    )  # the custom layer's parameter was trained too
