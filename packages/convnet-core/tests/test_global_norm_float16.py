"""optim.global_norm and clip_by_global_norm of float16 gradients: the squares are summed in
float32, so a norm above 256 (a sum of squares above float16's 65504) is not infinite and
does not zero the gradients; torch.nn.utils.clip_grad_norm_ gives the same numbers."""

import numpy
from convnet_core import backend, optim


def host(array):
    return numpy.asarray(backend.to_host(array))


def test_a_float16_norm_above_256_is_finite(xp):
    grads = {"W": xp.asarray(numpy.full(4, 300, numpy.float16))}  # norm 600
    norm = optim.global_norm(grads)
    assert float(norm) == 600.0  # torch: 600.0
    assert host(norm).dtype == numpy.float32


def test_clipping_float16_gradients_scales_them_as_torch_does(xp):
    grads = {"W": xp.asarray(numpy.full(4, 300, numpy.float16))}
    clipped = optim.clip_by_global_norm(grads, 1.0)["W"]
    numpy.testing.assert_array_equal(host(clipped), [0.5, 0.5, 0.5, 0.5])  # torch's
    assert clipped.dtype == numpy.float16


def test_one_square_above_65504_counts_too(xp):
    grads = [{"b": xp.asarray(numpy.array([1000.0], numpy.float16))}, {}]
    grads.append({"W": xp.asarray(numpy.full((2, 2), 0.5, numpy.float32))})
    assert float(optim.global_norm(grads)) == numpy.float32(numpy.sqrt(1000.0**2 + 1.0))


def test_float32_and_float64_sums_keep_their_dtype(xp):
    for dtype in ("float32", "float64"):
        norm = optim.global_norm({"W": xp.asarray(numpy.full(4, 3.0, dtype))})
        assert float(norm) == 6.0 and host(norm).dtype == dtype
