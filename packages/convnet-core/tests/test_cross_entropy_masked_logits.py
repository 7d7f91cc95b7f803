"""Cross-entropy with logits masked by -inf in classes that are not the target: a finite loss
(PyTorch's numbers), the gradient unchanged, on every path (the fused kernel on a GPU, the
array operations for float16, soft rows, or CONVNET_SOFTMAX_XENT=arrays)."""

import numpy
import pytest
from convnet_core import backend, losses
from convnet_core import cuda_kernels as K

# torch.nn.functional.cross_entropy of [[2, -inf, 0.5]] against class 0, and its gradient
TORCH_LOSS = 0.2014133334159851
TORCH_GRAD = [[-0.18242556, 0.0, 0.1824255]]


def host(array):
    return numpy.asarray(backend.to_host(array))


@pytest.fixture(params=["kernel", "arrays"])
def path(request, monkeypatch):
    monkeypatch.setattr(K, "SOFTMAX_XENT_ON_GPU", request.param)  # NumPy: always arrays
    return request.param


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("targets", ["labels", "one-hot rows"])
def test_a_masked_class_gives_torchs_finite_loss(xp, path, dtype, targets):
    logits = xp.asarray(numpy.array([[2.0, -numpy.inf, 0.5]], dtype=dtype))
    labels = xp.asarray([0]) if targets == "labels" else xp.asarray([[1.0, 0.0, 0.0]])
    value, grad = losses.softmax_cross_entropy(logits, labels, xp=xp)
    assert float(value) == pytest.approx(TORCH_LOSS, rel=1e-6)
    numpy.testing.assert_allclose(host(grad), TORCH_GRAD, rtol=1e-6, atol=1e-12)
    assert host(value).dtype == dtype and host(grad).dtype == dtype


def test_float16_logits_with_a_masked_class(xp):
    logits = xp.asarray(numpy.array([[2.0, -numpy.inf, 0.5], [0.0, 1.0, -numpy.inf]], "float16"))
    value, grad = losses.softmax_cross_entropy(logits, xp.asarray([0, 1]), xp=xp)
    z = numpy.array([[2.0, 0.5], [0.0, 1.0]])
    log_p = z - numpy.log(numpy.exp(z).sum(axis=1, keepdims=True))
    assert float(value) == pytest.approx(-(log_p[0, 0] + log_p[1, 1]) / 2, rel=2e-3)
    assert numpy.isfinite(host(grad)).all()


def test_soft_rows_skip_the_masked_class_and_keep_their_gradient(xp, path):
    logits = xp.asarray(numpy.array([[2.0, -numpy.inf, 0.5, 1.0]]))
    rows = xp.asarray(numpy.array([[0.5, 0.0, 0.25, 0.25]]))
    value, grad = losses.softmax_cross_entropy(logits, rows, xp=xp)
    z = numpy.array([2.0, 0.5, 1.0])
    log_p = z - numpy.log(numpy.exp(z).sum())
    assert float(value) == pytest.approx(-(0.5 * log_p[0] + 0.25 * log_p[1] + 0.25 * log_p[2]))
    p = numpy.exp(log_p)
    numpy.testing.assert_allclose(host(grad), [[p[0] - 0.5, 0, p[1] - 0.25, p[2] - 0.25]])


def test_a_target_on_the_masked_class_gives_an_infinite_loss(xp, path):
    logits = xp.asarray(numpy.array([[2.0, -numpy.inf, 0.5]]))
    value, _ = losses.softmax_cross_entropy(logits, xp.asarray([1]), xp=xp)
    assert float(value) == numpy.inf  # as torch
