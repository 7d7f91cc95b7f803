"""The losses: known values, gradients against central differences in float64, stability
for large logits, and the label shapes they refuse."""

import numpy
import pytest
from convnet_core import losses
from convnet_core.layers import Activation


def numerical_grad(loss, predictions, targets, xp, step=1e-6):
    """d loss / d predictions by central differences, element by element (float64)."""
    base = numpy.array(predictions, dtype=numpy.float64)  # host
    grad = numpy.zeros_like(base)
    for index in numpy.ndindex(base.shape):
        for sign in (1, -1):
            moved = base.copy()
            moved[index] += sign * step
            value, _ = loss(xp.asarray(moved), targets, xp=xp)
            grad[index] += sign * float(value) / (2 * step)
    return grad


def host(array):
    from convnet_core import backend

    return numpy.asarray(backend.to_host(array))


@pytest.fixture
def batch(xp):
    rng = numpy.random.default_rng(0)
    predictions = rng.normal(0, 2.0, (5, 4))  # float64
    return xp.asarray(predictions), rng.integers(0, 4, 5)


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_cross_entropy_value_and_gradient(xp, batch, one_hot):
    logits, labels = batch
    targets = xp.asarray(numpy.eye(4)[labels]) if one_hot else xp.asarray(labels)
    value, grad = losses.softmax_cross_entropy(logits, targets, xp=xp)
    z = host(logits)
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= numpy.log(numpy.exp(log_p).sum(axis=1, keepdims=True))
    assert float(value) == pytest.approx(-log_p[numpy.arange(5), labels].mean(), rel=1e-12)
    want = numerical_grad(losses.softmax_cross_entropy, host(logits), targets, xp)
    numpy.testing.assert_allclose(host(grad), want, rtol=1e-6, atol=1e-9)


def test_mse_value_and_gradient(xp, batch):
    predictions, _ = batch
    targets = xp.asarray(numpy.linspace(-1, 1, 20).reshape(5, 4))
    value, grad = losses.mse(predictions, targets, xp=xp)
    diff = host(predictions) - host(targets)
    assert float(value) == pytest.approx((diff**2).mean(), rel=1e-12)
    numpy.testing.assert_allclose(host(grad), 2 * diff / diff.size, rtol=1e-12)
    want = numerical_grad(losses.mse, host(predictions), targets, xp)
    numpy.testing.assert_allclose(host(grad), want, rtol=1e-6, atol=1e-9)


def test_huber_is_quadratic_near_zero_and_linear_beyond_delta(xp):
    # differences 0.5 (quadratic: 0.125) and 3.0 (linear: 1.0 * (3.0 - 0.5) = 2.5)
    predictions = xp.asarray(numpy.array([[0.5, 3.0]]))
    targets = xp.asarray(numpy.zeros((1, 2)))
    value, grad = losses.huber(predictions, targets, xp=xp, delta=1.0)
    assert float(value) == pytest.approx((0.125 + 2.5) / 2, rel=1e-12)
    numpy.testing.assert_allclose(host(grad), [[0.5 / 2, 1.0 / 2]], rtol=1e-12)  # clipped


def test_huber_gradient_matches_central_differences(xp, batch):
    predictions, _ = batch
    targets = xp.asarray(numpy.zeros((5, 4)))
    _, grad = losses.huber(predictions, targets, xp=xp, delta=1.0)
    want = numerical_grad(losses.huber, host(predictions), targets, xp)
    numpy.testing.assert_allclose(host(grad), want, rtol=1e-6, atol=1e-9)


def test_huge_logits_stay_finite(xp):
    logits = xp.asarray(numpy.array([[1000.0, 0.0, -1000.0]]))
    value, grad = losses.softmax_cross_entropy(logits, xp.asarray([1]), xp=xp)
    assert float(value) == pytest.approx(1000.0)
    assert numpy.isfinite(host(grad)).all()
    log_p = host(losses.log_softmax(logits, xp=xp))
    numpy.testing.assert_allclose(log_p, [[0.0, -1000.0, -2000.0]])
    y, _, _ = Activation("softmax").apply({}, {}, logits, training=False, rng=None, xp=xp)
    numpy.testing.assert_allclose(host(y), [[1.0, 0.0, 0.0]])


def test_one_hot_labels_of_the_wrong_width_are_refused(xp, batch):
    logits, labels = batch
    with pytest.raises(ValueError, match=r"one-hot labels of shape \(5, 3\) do not match"):
        losses.softmax_cross_entropy(logits, xp.asarray(numpy.eye(3)[labels % 3]), xp=xp)
    with pytest.raises(ValueError, match=r"labels must be \(N,\) integers"):
        losses.softmax_cross_entropy(logits, xp.asarray(labels[:3]), xp=xp)
