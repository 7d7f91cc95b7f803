"""ops.im2col_same_size / col2im_same_size: whole-plane shifts equal the padded im2col/col2im."""

from __future__ import annotations

import numpy
import pytest
from convnet_core import ops

# (H, W, kh, kw): odd and even kernels, a kernel larger than the image, 1x1
CASES = [(14, 14, 3, 3), (5, 7, 3, 3), (4, 4, 2, 2), (3, 3, 5, 5), (6, 5, 4, 3), (1, 1, 3, 3)]


def _same(h, w, kh, kw):
    return (*ops.same_padding(h, kh, 1), *ops.same_padding(w, kw, 1))


@pytest.mark.parametrize(("h", "w", "kh", "kw"), CASES)
@pytest.mark.parametrize("channel_major", [False, True])
def test_im2col_same_size_matches_padded_im2col(h, w, kh, kw, channel_major):
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((3, 2, h, w))  # (N, C, H, W)
    if channel_major:  # the layers' layout: (C, N, H, W) in memory
        x = numpy.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    pads = _same(h, w, kh, kw)
    assert ops.keeps_size((h, w), (kh, kw), (1, 1), pads)
    expected = ops.im2col(ops.pad_spatial(x, pads, xp=numpy), (kh, kw), (1, 1), xp=numpy)
    got = ops.im2col_same_size(x, (kh, kw), pads, xp=numpy)
    numpy.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("h", "w", "kh", "kw"), CASES)
def test_col2im_same_size_matches_padded_col2im(h, w, kh, kw):
    rng = numpy.random.default_rng(1)
    n, c = 3, 2
    pads = _same(h, w, kh, kw)
    dcols = rng.standard_normal((c * kh * kw, n * h * w))
    padded_shape = (n, c, h + pads[0] + pads[1], w + pads[2] + pads[3])
    dx_padded = ops.col2im(dcols.copy(), padded_shape, (kh, kw), (1, 1), xp=numpy)
    expected = ops.unpad_spatial(dx_padded, pads)
    got = ops.col2im_same_size(dcols.copy(), (n, c, h, w), (kh, kw), pads, xp=numpy)
    assert got.shape == (n, c, h, w)
    numpy.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("h", "w", "kh", "kw"), [(1, 2, 3, 3), (1, 1, 5, 5), (2, 1, 5, 3)])
def test_shifts_longer_than_a_single_small_image(h, w, kh, kw):
    # one sample smaller than the kernel: some shifts reach past all N*H*W pixels
    x = numpy.random.default_rng(3).standard_normal((1, 2, h, w))
    pads = _same(h, w, kh, kw)
    expected = ops.im2col(ops.pad_spatial(x, pads, xp=numpy), (kh, kw), (1, 1), xp=numpy)
    cols = ops.im2col_same_size(x, (kh, kw), pads, xp=numpy)
    numpy.testing.assert_array_equal(cols, expected)
    padded_shape = (1, 2, h + pads[0] + pads[1], w + pads[2] + pads[3])
    dx_padded = ops.col2im(cols.copy(), padded_shape, (kh, kw), (1, 1), xp=numpy)
    dx = ops.col2im_same_size(cols.copy(), x.shape, (kh, kw), pads, xp=numpy)
    numpy.testing.assert_allclose(dx, ops.unpad_spatial(dx_padded, pads), rtol=1e-12)


def test_col2im_same_size_is_the_adjoint_of_im2col_same_size():
    # <im2col(x), d> == <x, col2im(d)> for every x, d: the backward pass is exact
    rng = numpy.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6, 5))
    pads = _same(6, 5, 3, 3)
    cols = ops.im2col_same_size(x, (3, 3), pads, xp=numpy)
    d = rng.standard_normal(cols.shape)
    dx = ops.col2im_same_size(d.copy(), x.shape, (3, 3), pads, xp=numpy)
    assert numpy.isclose(numpy.sum(cols * d), numpy.sum(x * dx), rtol=1e-12)


@pytest.mark.parametrize(
    ("hw", "kernel", "stride", "pads", "expected"),
    [
        ((28, 28), (3, 3), (1, 1), (1, 1, 1, 1), True),
        ((28, 28), (3, 3), (2, 2), (1, 1, 1, 1), False),  # stride 2 halves the size
        ((28, 28), (3, 3), (1, 1), (0, 0, 0, 0), False),  # 'valid' shrinks it
        ((9, 8), (4, 2), (1, 1), (1, 2, 0, 1), True),
    ],
)
def test_keeps_size(hw, kernel, stride, pads, expected):
    assert ops.keeps_size(hw, kernel, stride, pads) is expected
