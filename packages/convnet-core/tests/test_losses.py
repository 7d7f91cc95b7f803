"""The losses: known values, gradients against central differences in float64, stability
for large logits, and the labels they refuse (shapes, dtypes, classes out of range)."""

import functools

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


def on_gpu(xp):
    from convnet_core.backend import is_cupy

    return is_cupy(xp)


def assert_refused_by_the_loss_and_one_hot(xp, logits, labels, words):
    """softmax_cross_entropy and one_hot (3 classes) each raise ValueError(`words`)."""
    with pytest.raises(ValueError) as error:
        losses.softmax_cross_entropy(logits, labels, xp=xp)
    assert str(error.value) == f"softmax_cross_entropy: {words}"
    with pytest.raises(ValueError) as error:
        losses.one_hot(labels, 3, xp=xp)
    assert str(error.value) == f"one_hot: {words}"


# (labels, the words of NumPy's error) for logits of 3 classes
BAD_LABELS = [
    ([0, 2, -1], "label -1 at index 2 is not a class: the 3 classes are 0 to 2"),
    ([3, 0, 1], "label 3 at index 0 is not a class: the 3 classes are 0 to 2"),
]


@pytest.mark.parametrize(("labels", "words"), BAD_LABELS)
def test_a_label_outside_the_classes_is_refused_on_numpy_and_nan_on_a_gpu(xp, labels, words):
    logits = xp.asarray(numpy.zeros((3, 3)))
    labels = xp.asarray(numpy.array(labels, dtype="int64"))
    if not on_gpu(xp):
        assert_refused_by_the_loss_and_one_hot(xp, logits, labels, words)
        return
    from host_waits import assert_never_waits_for_the_gpu

    # a GPU does not read the labels: the wrong one makes the loss NaN, fused or not
    for loss in (losses.softmax_cross_entropy, losses.softmax_cross_entropy_unfused):
        value, _ = assert_never_waits_for_the_gpu(
            xp, functools.partial(loss, logits, labels, xp=xp), warm_up=True
        )
        assert numpy.isnan(float(value)), loss.__name__
    rows = host(
        assert_never_waits_for_the_gpu(xp, lambda: losses.one_hot(labels, 3, xp=xp), warm_up=True)
    )
    bad = 2 if words.startswith("label -1") else 0
    assert numpy.isnan(rows[bad]).all()
    good = [i for i in range(3) if i != bad]
    numpy.testing.assert_array_equal(rows[good], numpy.eye(3)[host(labels)[good]])


def test_the_last_class_and_class_zero_are_labels(xp):
    logits = xp.asarray(numpy.array([[0.0, 0.0, 5.0], [5.0, 0.0, 0.0]]))
    value, _ = losses.softmax_cross_entropy(logits, xp.asarray([2, 0]), xp=xp)
    assert float(value) == pytest.approx(-numpy.log(numpy.exp(5) / (numpy.exp(5) + 2)))
    rows = host(losses.one_hot(xp.asarray(numpy.array([2, 0], dtype="uint8")), 3, xp=xp))
    numpy.testing.assert_array_equal(rows, [[0, 0, 1], [1, 0, 0]])


@pytest.mark.parametrize("dtype", ["float64", "float32", "bool"])
def test_labels_that_are_not_integers_are_refused(xp, dtype):
    logits = xp.asarray(numpy.zeros((2, 3)))
    labels = xp.asarray(numpy.array([1, 0], dtype=dtype))
    want = (
        f"class labels must be integers, got dtype {dtype}; whole-number floats can be "
        "passed as labels.astype(int)"
    )
    assert_refused_by_the_loss_and_one_hot(xp, logits, labels, want)


@pytest.mark.parametrize(
    "rows",
    [
        [[0.5, 0.5, 0.5]],  # sums to 1.5
        [[0.2, 0.3, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 1.0]],  # 0.5, 0 and 3
        [[0.1, 0.7, 0.2], [0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3]],  # each sums to 1
    ],
)
@pytest.mark.parametrize(
    "loss", [losses.softmax_cross_entropy, losses.softmax_cross_entropy_unfused]
)
def test_soft_targets_get_the_gradient_of_their_loss(xp, rows, loss):
    targets = numpy.array(rows)  # (N, 3), rows that need not sum to 1
    z = numpy.random.default_rng(0).standard_normal(targets.shape)
    value, grad = loss(xp.asarray(z), xp.asarray(targets), xp=xp)

    log_p = z - numpy.log(numpy.exp(z).sum(axis=1, keepdims=True))
    assert float(value) == pytest.approx(-(targets * log_p).sum() / len(z), rel=1e-12)
    # d/dz of -1/N Σ t log softmax(z) is (softmax(z) Σₖ tₖ - t) / N
    want = (numpy.exp(log_p) * targets.sum(axis=1, keepdims=True) - targets) / len(z)
    numpy.testing.assert_allclose(host(grad), want, rtol=1e-12, atol=1e-15)
    fd = numerical_grad(loss, z, xp.asarray(targets), xp)
    numpy.testing.assert_allclose(host(grad), fd, rtol=1e-6, atol=1e-9)
