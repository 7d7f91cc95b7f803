"""`model.loss` of a model ending in a softmax with cross-entropy: any output of the model
(an inference forward, predict, a copy) is taken as the probabilities it is, and the output
of the last forward(training=True) still takes the fused softmax/cross-entropy path."""

import numpy
import pytest
from convnet_core import Model, backend, losses
from convnet_core.layers import Activation, Dense


def host(array):
    return numpy.asarray(backend.to_host(array))


@pytest.fixture
def model(xp):
    model = Model([Dense(3), Activation("softmax")], device=xp, dtype="float64", seed=0)
    model.compile(loss="categorical_crossentropy", optimizer="sgd", lr=0.1)
    return model.build((6,))


@pytest.fixture
def data():
    rng = numpy.random.default_rng(0)
    return rng.standard_normal((10, 6)), rng.integers(0, 3, 10)


def by_hand(probs, labels):
    """-1/N Σ log p[label] and its gradient -t / (p N), from the probabilities (N, 3)."""
    n = probs.shape[0]
    loss = -numpy.log(probs[numpy.arange(n), labels]).mean()
    grad = numpy.zeros_like(probs)
    grad[numpy.arange(n), labels] = -1 / (probs[numpy.arange(n), labels] * n)
    return loss, grad


@pytest.mark.parametrize("output", ["inference forward", "predict", "copy of a training forward"])
def test_the_loss_of_any_output_is_the_cross_entropy_of_its_probabilities(model, data, output):
    x, y = data
    probs = host(model.predict(x))
    if output == "inference forward":
        out = model.forward(x)
    elif output == "predict":
        out = model.predict(x)  # a host array
    else:
        out = model.forward(x, training=True).copy()
    want_loss, want_grad = by_hand(probs, y)
    assert model.loss.forward(out, y) == pytest.approx(want_loss, rel=1e-12)
    numpy.testing.assert_allclose(host(model.loss.backward()), want_grad, rtol=1e-12)
    value, grad = model.loss(out, y)
    assert float(value) == pytest.approx(want_loss, rel=1e-12)
    numpy.testing.assert_allclose(host(grad), want_grad, rtol=1e-12)


def test_the_training_output_keeps_the_fused_path(model, data, xp):
    x, y = data
    out = model.forward(x, training=True)
    logits = model._record["logits"]
    fused_value, dlogits = losses.softmax_cross_entropy(logits, xp.asarray(y), xp=xp)
    assert model.loss.forward(out, y) == float(fused_value)  # the same numbers, bit for bit
    grad = model.loss.backward()
    want_grad = by_hand(host(out), y)[1]
    numpy.testing.assert_allclose(host(grad), want_grad, rtol=1e-12)
    assert model.loss._fused_grad_for(grad, model._record) is model.loss._fused[2]
    numpy.testing.assert_array_equal(host(model.loss._fused[2]), host(dlogits))


def test_soft_rows_against_probabilities_by_hand(model, data):
    x, _ = data
    rows = numpy.random.default_rng(1).dirichlet(numpy.ones(3), 10)  # (10, 3), rows sum to 1
    rows[0] = [0.0, 1.0, 0.0]
    probs = host(model.predict(x))
    want = -(rows * numpy.log(probs)).sum() / 10
    assert model.loss.forward(model.forward(x), rows) == pytest.approx(want, rel=1e-12)
    numpy.testing.assert_allclose(host(model.loss.backward()), -rows / (probs * 10), rtol=1e-12)


def test_a_probability_of_zero_gives_a_finite_loss(xp):
    probs = xp.asarray(numpy.array([[1.0, 0.0], [0.5, 0.5]], dtype=numpy.float32))
    value, grad = losses.cross_entropy_of_probabilities(probs, xp.asarray([1, 0]), xp=xp)
    tiny = numpy.finfo(numpy.float32).tiny
    assert float(value) == pytest.approx((-numpy.log(tiny) - numpy.log(0.5)) / 2, rel=1e-6)
    assert host(value).dtype == numpy.float32 and host(grad).dtype == numpy.float32
    numpy.testing.assert_allclose(host(grad), [[0, -1 / (tiny * 2)], [-1.0, 0]], rtol=1e-6)
