"""The GPU kernels' own source, host code included, run on the CPU against their references.

`cuda_source_on_cpu.CupyOnCpu` replaces CuPy inside convnet_core.cuda_kernels: the CUDA C
of each kernel is compiled by g++ and run over NumPy arrays, so the functions optim.Adam,
Activation("relu"), Conv2D and the softmax cross-entropy call on a GPU run here unchanged,
except for CuPy itself. Because no multiply-add is fused here, the kernels must equal their
NumPy references to the last bit, except where the arithmetic itself differs: the loss
kernel's exp and log are the C library's, not NumPy's vectorised ones, and its sums run
in another order. On a GPU, tests-cuda runs the same comparisons with CuPy.
"""

from __future__ import annotations

import numpy
import pytest
from convnet_core import cuda_kernels as K
from convnet_core import layers as L
from convnet_core import losses, ops
from test_cuda_kernels_reference import COL2IM_CASES


def random_dcols(rng, padded_shape, kernel, stride, dtype):
    """Column gradients (C*kh*kw, N*Ho*Wo) for a conv over a padded (N, C, Hp, Wp) batch."""
    n, c, hp, wp = padded_shape
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = ops.conv_output_size(hp, kh, sh, 0), ops.conv_output_size(wp, kw, sw, 0)
    return rng.normal(size=(c * kh * kw, n * ho * wo)).astype(dtype)


# ---------------------------------------------------------------------------------------
# col2im


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("padded_shape", "kernel", "stride"), COL2IM_CASES)
def test_col2im_gather_equals_ops_col2im(cupy_on_cpu, padded_shape, kernel, stride, dtype):
    dcols = random_dcols(numpy.random.default_rng(0), padded_shape, kernel, stride, dtype)
    want = ops.col2im(dcols, padded_shape, kernel, stride, xp=numpy)

    got = K.col2im_on_gpu(dcols, padded_shape, kernel, stride)

    assert cupy_on_cpu.kernels_built == [f"convnet_col2im_gather_{dtype}"]
    assert got.shape == padded_shape and got.dtype == numpy.dtype(dtype)
    numpy.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_col2im_gather_reads_any_strides(cupy_on_cpu, dtype):
    padded_shape, kernel, stride = (3, 2, 9, 8), (3, 3), (2, 2)
    dcols = random_dcols(numpy.random.default_rng(1), padded_shape, kernel, stride, dtype)
    blocks = dcols.reshape(2, 3, 3, 3, 4, 3)  # (C, kh, kw, N, Ho, Wo) view
    want = K.col2im_loop(blocks, padded_shape, stride, xp=numpy)
    # the same numbers in sample-major memory, read through a transposed view
    sample_major = numpy.ascontiguousarray(blocks.transpose(3, 0, 1, 2, 4, 5))
    view = sample_major.transpose(1, 2, 3, 0, 4, 5)
    assert not view.flags.c_contiguous

    numpy.testing.assert_array_equal(K.col2im_gather(view, padded_shape, stride), want)


@pytest.mark.parametrize(("padded_shape", "kernel", "stride"), COL2IM_CASES)
def test_float16_col2im_sums_in_float32_and_rounds_once(cupy_on_cpu, padded_shape, kernel, stride):
    dcols = random_dcols(numpy.random.default_rng(0), padded_shape, kernel, stride, "float16")
    # the same float16 numbers summed in float32, in the same order, rounded to float16 once
    want = ops.col2im(dcols.astype("float32"), padded_shape, kernel, stride, xp=numpy)

    got = K.col2im_on_gpu(dcols, padded_shape, kernel, stride)

    assert cupy_on_cpu.kernels_built == ["convnet_col2im_gather_float32"]
    assert got.shape == padded_shape and got.dtype == numpy.dtype("float16")
    assert got.transpose(1, 0, 2, 3).flags.c_contiguous  # channel-major, as the loop's
    numpy.testing.assert_array_equal(got, want.astype("float16"))
    # the float16 loop rounds after each add: the same within float16's precision
    loop = ops.col2im(dcols, padded_shape, kernel, stride, xp=numpy)
    numpy.testing.assert_allclose(got, loop, rtol=4e-3, atol=4e-3)


def test_col2im_gather_covers_more_pixels_than_threads(cupy_on_cpu, monkeypatch):
    # 2 blocks of 256 threads for 2*3*11*11 = 726 pixels: the grid-stride loop does the rest
    monkeypatch.setattr(K, "MAX_BLOCKS", 2)
    padded_shape, kernel, stride = (2, 3, 11, 11), (3, 3), (1, 1)
    dcols = random_dcols(numpy.random.default_rng(2), padded_shape, kernel, stride, "float32")
    want = ops.col2im(dcols, padded_shape, kernel, stride, xp=numpy)
    numpy.testing.assert_array_equal(K.col2im_on_gpu(dcols, padded_shape, kernel, stride), want)


def test_a_wrong_index_in_the_kernel_source_is_caught(cupy_on_cpu, monkeypatch):
    # the comparison above is sharp enough to see a swapped stride in the CUDA source
    wrong = K._COL2IM_SOURCE.replace("oy * s_oy + ox * s_ox", "oy * s_ox + ox * s_oy")
    assert wrong != K._COL2IM_SOURCE
    monkeypatch.setattr(K, "_COL2IM_SOURCE", wrong)
    padded_shape, kernel, stride = (2, 2, 7, 6), (3, 3), (1, 1)
    dcols = random_dcols(numpy.random.default_rng(3), padded_shape, kernel, stride, "float64")
    want = ops.col2im(dcols, padded_shape, kernel, stride, xp=numpy)
    got = K.col2im_on_gpu(dcols, padded_shape, kernel, stride)
    assert not numpy.array_equal(got, want)


# ---------------------------------------------------------------------------------------
# Adam


ADAM_OPTIONS = {
    "adam": dict(beta1=0.9, beta2=0.999, eps=1e-8),
    "adam-l2": dict(beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1),
    "adamw": dict(beta1=0.9, beta2=0.999, eps=1e-8, decoupled_weight_decay=0.05),
}


@pytest.mark.parametrize("variant", sorted(ADAM_OPTIONS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_adam_equals_its_reference(cupy_on_cpu, dtype, variant):
    rng = numpy.random.default_rng(4)
    p, g, m = (rng.normal(size=(33, 17)).astype(dtype) for _ in range(3))
    v = rng.uniform(0, 1, (33, 17)).astype(dtype)
    t = 7
    scalars = {  # 0-d arrays of the parameter's dtype, as optim.Adam keeps them
        "lr": numpy.asarray(3e-3, dtype),
        "step_size": numpy.asarray(3e-3 / (1 - 0.9**t), dtype),
        "inv_sqrt_bias2": numpy.asarray(1 / (1 - 0.999**t) ** 0.5, dtype),
    }
    options = ADAM_OPTIONS[variant]
    want = K.adam_update_reference(p, g, m, v, **scalars, **options)

    got = K.fused_adam_update(p, g, m, v, **scalars, **options)

    assert cupy_on_cpu.kernels_built == ["convnet_fused_adam"]
    for name, mine, reference in zip(("param", "m", "v"), got, want, strict=True):
        assert mine.dtype == numpy.dtype(dtype)
        numpy.testing.assert_array_equal(mine, reference, err_msg=name)
    assert not numpy.array_equal(got[0], p)  # a step was taken


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_adam_scalars_equal_their_reference(cupy_on_cpu, dtype):
    betas = {"beta1": 0.9, "beta2": 0.999}
    lr = numpy.asarray(3e-4)  # 0-d float64, as optim keeps it
    for t in (1, 2, 7, 1000, 123_457):  # late steps: 1 - β2ᵗ close to 1
        # a NumPy scalar, as optim's step is: its powers are the C library's, as in the
        # kernel here (NumPy's vectorised power for arrays may differ in the last bit)
        step = numpy.int64(t)
        want = K.adam_scalars_reference(step, lr, dtype=dtype, **betas)
        got = K.fused_adam_scalars(step, lr, dtype=dtype, **betas)
        for g, w in zip(got, want, strict=True):
            assert g.shape == () and g.dtype == numpy.dtype(dtype)
            numpy.testing.assert_array_equal(g, w)
    assert cupy_on_cpu.kernel_calls == ["convnet_adam_scalars"] * 5


def test_fused_adam_keeps_the_inputs_of_a_step_not_taken(cupy_on_cpu):
    rng = numpy.random.default_rng(4)
    p, g, m = (rng.normal(size=(9, 4)).astype("float32") for _ in range(3))
    v = rng.uniform(0, 1, (9, 4)).astype("float32")
    g[3, 1] = numpy.nan  # an overflowed gradient, as mixed precision skips them
    scalars = {k: numpy.asarray(1e-2, "float32") for k in ("lr", "step_size", "inv_sqrt_bias2")}
    options = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
    for take in (numpy.asarray(False), False):
        got = K.fused_adam_update(p, g, m, v, **scalars, **options, take=take)
        for mine, given in zip(got, (p, m, v), strict=True):
            numpy.testing.assert_array_equal(mine, given)
    taken = K.fused_adam_update(p, g, m, v, **scalars, **options, take=numpy.asarray(True))
    with numpy.errstate(invalid="ignore"):
        want = K.adam_update_reference(p, g, m, v, **scalars, **options)
    for mine, reference in zip(taken, want, strict=True):
        numpy.testing.assert_array_equal(mine, reference)  # the NaN included
    assert numpy.isnan(taken[0][3, 1])


# ---------------------------------------------------------------------------------------
# loss scaling


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_unscale_and_check_equals_its_reference(cupy_on_cpu, dtype):
    rng = numpy.random.default_rng(9)
    inverse = numpy.asarray(1 / 3000, "float32")  # 0-d, as the scaler computes it
    nonfinite = numpy.zeros(1, "int32")
    for shape in [(7, 5), (3,), (), (2, 3, 4, 5)]:
        scaled = (rng.normal(0, 3000, shape)).astype(dtype)
        got = K.unscale_and_check(scaled, inverse, nonfinite)
        assert got.shape == shape and got.dtype == numpy.dtype("float32")
        numpy.testing.assert_array_equal(got, K.unscale_reference(scaled, inverse))
    assert nonfinite[0] == 0  # every result finite
    assert cupy_on_cpu.kernel_calls == ["convnet_unscale_and_check"] * 4


@pytest.mark.parametrize("bad", [numpy.inf, -numpy.inf, numpy.nan])
def test_unscale_and_check_flags_inf_and_nan_and_keeps_the_flag(cupy_on_cpu, bad):
    inverse = numpy.asarray(0.5, "float32")
    nonfinite = numpy.zeros(1, "int32")
    scaled = numpy.arange(12, dtype="float16").reshape(3, 4)
    scaled[2, 1] = bad
    got = K.unscale_and_check(scaled, inverse, nonfinite)
    numpy.testing.assert_array_equal(got, K.unscale_reference(scaled, inverse))
    assert nonfinite[0] == 1
    K.unscale_and_check(numpy.ones(5, "float16"), inverse, nonfinite)  # a later, finite leaf
    assert nonfinite[0] == 1


# ---------------------------------------------------------------------------------------
# ReLU


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_relu_equals_its_references(cupy_on_cpu, dtype):
    rng = numpy.random.default_rng(5)
    x = rng.normal(size=(4, 8, 5, 5)).astype(dtype)
    x.flat[:5] = [numpy.nan, numpy.inf, -numpy.inf, 0.0, -0.0]
    dy = rng.normal(size=x.shape).astype(dtype)
    dy.flat[5:8] = [numpy.inf, numpy.nan, -numpy.inf]
    x.flat[5:8] = [-1.0, 2.0, 0.0]  # inf·0 must give NaN backward, as in the reference
    with numpy.errstate(invalid="ignore"):
        want_y = K.relu_forward_reference(x)
        want_dx = K.relu_backward_reference(want_y, dy)

        y = K.fused_relu_forward(x)
        dx = K.fused_relu_backward(y, dy)

    assert cupy_on_cpu.kernels_built == ["convnet_relu_forward", "convnet_relu_backward"]
    assert y.dtype == dx.dtype == numpy.dtype(dtype)
    numpy.testing.assert_array_equal(y, want_y)
    numpy.testing.assert_array_equal(dx, want_dx)
    assert numpy.isnan(dx.flat[7])


def test_fused_relu_keeps_the_channel_major_layout(cupy_on_cpu):
    # Conv2D hands on (N, C, H, W) views of (C, N, H, W) memory; ReLU must not reorder them
    rng = numpy.random.default_rng(6)
    x = rng.normal(size=(8, 4, 6, 6)).astype("float32").transpose(1, 0, 2, 3)
    y = K.fused_relu_forward(x)
    dx = K.fused_relu_backward(y, x)
    assert y.strides == x.strides and dx.strides == x.strides
    numpy.testing.assert_array_equal(y, numpy.maximum(x, 0))
    numpy.testing.assert_array_equal(dx, x * (x > 0))


# ---------------------------------------------------------------------------------------
# softmax cross-entropy


def logits_and_labels(rng, n, k, dtype, scale=3.0):
    logits = (scale * rng.normal(size=(n, k))).astype(dtype)  # (N, k)
    return logits, rng.integers(0, k, n)  # labels (N,) int64


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("n", "k", "scale"), [(7, 10, 3.0), (300, 3, 1.0), (5, 10, 400.0)])
def test_fused_softmax_cross_entropy_equals_the_loss(cupy_on_cpu, n, k, scale, dtype):
    # 300 rows: more than one block of 128 threads; scale 400: exp(z) alone would overflow
    logits, labels = logits_and_labels(numpy.random.default_rng(n), n, k, dtype, scale)
    want_loss, want_grad = losses.softmax_cross_entropy(logits, labels, xp=numpy)

    loss, grad = K.fused_softmax_cross_entropy(logits, labels)

    assert cupy_on_cpu.kernel_calls == [f"convnet_softmax_xent_{dtype}"]
    assert numpy.asarray(loss).dtype == grad.dtype == numpy.dtype(dtype)
    assert grad.shape == (n, k)
    rtol = 1e-6 if dtype == "float32" else 1e-14
    numpy.testing.assert_allclose(loss, want_loss, rtol=rtol)
    numpy.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=rtol * abs(want_grad).max())


def test_fused_softmax_cross_entropy_reads_a_transposed_view(cupy_on_cpu):
    logits, labels = logits_and_labels(numpy.random.default_rng(2), 6, 4, "float32")
    view = numpy.ascontiguousarray(logits.T).T  # the same numbers, column-major
    loss, grad = K.fused_softmax_cross_entropy(view, labels.astype("int32"))
    want_loss, want_grad = losses.softmax_cross_entropy(logits, labels, xp=numpy)
    numpy.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    numpy.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-7)


def test_a_label_out_of_range_makes_the_fused_loss_nan(cupy_on_cpu):
    logits, labels = logits_and_labels(numpy.random.default_rng(3), 4, 3, "float32")
    labels[2] = 3  # one past the last class; NumPy raises IndexError here
    loss, grad = K.fused_softmax_cross_entropy(logits, labels)
    assert numpy.isnan(loss)
    assert numpy.isfinite(grad).all()  # the bad row's gradient is its softmax / N


def test_a_nan_logit_gives_a_nan_row(cupy_on_cpu):
    logits, labels = logits_and_labels(numpy.random.default_rng(4), 3, 5, "float64")
    logits[1, 3] = numpy.nan
    loss, grad = K.fused_softmax_cross_entropy(logits, labels)
    assert numpy.isnan(loss) and numpy.isnan(grad[1]).all()
    assert numpy.isfinite(grad[[0, 2]]).all()


# ---------------------------------------------------------------------------------------
# max pooling


# (input shape, pool, stride): tiling 2x2, tiles with rows and columns left over, a 3x2
# window, overlapping windows, and 17 x 17 = 289 offsets (int32 positions)
MAXPOOL_CASES = [
    ((2, 3, 8, 8), (2, 2), (2, 2)),
    ((2, 2, 7, 9), (3, 3), (3, 3)),
    ((1, 2, 9, 8), (3, 2), (3, 2)),
    ((2, 2, 7, 7), (3, 3), (1, 2)),
    ((1, 1, 20, 19), (17, 17), (1, 1)),
]


def pool_input(rng, shape, dtype, *, channel_major):
    """Small integers, so windows often hold ties; channel-major like a conv's output."""
    x = rng.integers(-3, 4, shape).astype(dtype)
    if channel_major:
        x = numpy.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    return x


@pytest.mark.parametrize("channel_major", [True, False])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize(("shape", "pool", "stride"), MAXPOOL_CASES)
def test_maxpool_kernels_equal_the_layer(cupy_on_cpu, shape, pool, stride, dtype, channel_major):
    layer = L.MaxPool2D(pool, stride=stride)
    rng = numpy.random.default_rng(sum(shape))
    x = pool_input(rng, shape, dtype, channel_major=channel_major)
    y, _, cache = layer.apply({}, {}, x, training=True, rng=None, xp=numpy)
    dy = rng.normal(size=y.shape).astype(dtype)
    _, dx = layer.grad({}, cache, dy, xp=numpy)

    fy, first_max = K.maxpool_forward(x, pool, stride)
    fdx = K.maxpool_backward(dy, first_max, shape, pool, stride)

    index = "uint8" if pool[0] * pool[1] <= 256 else "int32"
    kernel_dtype = "float32" if dtype == "float16" else dtype  # float16: widened
    assert cupy_on_cpu.kernel_calls == [
        f"convnet_maxpool_forward_{kernel_dtype}_{index}",
        f"convnet_maxpool_backward_{kernel_dtype}_{index}",
    ]
    assert fy.dtype == fdx.dtype == numpy.dtype(dtype) and first_max.dtype == index
    assert fy.transpose(1, 0, 2, 3).flags.c_contiguous  # channel-major, as the kernels write
    numpy.testing.assert_array_equal(fy, y)  # a max is exact in any width
    if dtype == "float16" and not layer.tiles:
        # overlapping windows: summed in float32, window by window, and rounded once
        wide = numpy.zeros(shape, "float32")
        for k, view in enumerate(ops.pool_windows(wide, pool, stride)):
            view += (first_max == k) * dy.astype("float32")
        numpy.testing.assert_array_equal(fdx, wide.astype("float16"))
        numpy.testing.assert_allclose(fdx, dx, rtol=4e-3, atol=4e-3)  # NumPy's float16 adds
    else:
        numpy.testing.assert_array_equal(fdx, dx)  # one term per pixel, or the same order


def test_maxpool_kernels_follow_numpys_nan_rules(cupy_on_cpu):
    layer = L.MaxPool2D((2, 2), stride=(1, 1))  # the general path: one offset per window
    x = pool_input(numpy.random.default_rng(7), (1, 1, 4, 4), "float32", channel_major=False)
    x[0, 0, 1, 2] = numpy.nan
    y, _, (_, first_max) = layer.apply({}, {}, x, training=True, rng=None, xp=numpy)
    fy, f_first_max = K.maxpool_forward(x, (2, 2), (1, 1))
    numpy.testing.assert_array_equal(fy, y)  # NaN where a window holds the NaN
    numpy.testing.assert_array_equal(f_first_max, first_max)
    assert numpy.isnan(fy).sum() == 4


def test_maxpool_kernels_cover_more_items_than_threads(cupy_on_cpu, monkeypatch):
    monkeypatch.setattr(K, "MAX_BLOCKS", 1)  # one block of 256 threads for 2*4*12*12 pixels
    layer = L.MaxPool2D((2, 2))
    x = pool_input(numpy.random.default_rng(8), (2, 4, 12, 12), "float32", channel_major=True)
    y, _, cache = layer.apply({}, {}, x, training=True, rng=None, xp=numpy)
    dy = numpy.ones_like(y)
    _, dx = layer.grad({}, cache, dy, xp=numpy)
    fy, first_max = K.maxpool_forward(x, (2, 2), (2, 2))
    numpy.testing.assert_array_equal(fy, y)
    numpy.testing.assert_array_equal(K.maxpool_backward(dy, first_max, x.shape, (2, 2), (2, 2)), dx)


# ---------------------------------------------------------------------------------------
# im2col

# (input shape, kernel, stride, pads): "same" 3x3, uneven pads, strides, no padding, a
# kernel wider than the padded input is tall... every geometry Conv2D can ask for
IM2COL_CASES = [
    ((2, 3, 7, 7), (3, 3), (1, 1), (1, 1, 1, 1)),
    ((2, 2, 8, 6), (4, 4), (2, 2), (1, 2, 1, 2)),
    ((1, 3, 9, 10), (3, 2), (2, 3), (0, 0, 0, 0)),
    ((3, 1, 5, 5), (1, 1), (1, 1), (0, 0, 0, 0)),
    ((2, 2, 4, 9), (5, 3), (1, 2), (2, 2, 0, 1)),
]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize(("shape", "kernel", "stride", "pads"), IM2COL_CASES)
def test_im2col_gather_equals_pad_then_im2col(cupy_on_cpu, shape, kernel, stride, pads, dtype):
    rng = numpy.random.default_rng(len(IM2COL_CASES) + sum(shape))
    x = rng.normal(size=shape).astype(dtype)
    x[0, 0, 0, 0] = -0.0  # copied as bits: the sign of zero survives
    channel_major = numpy.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    want = ops.im2col(ops.pad_spatial(x, pads, xp=numpy), kernel, stride, xp=numpy)

    for layout in (x, channel_major):
        got = K.im2col_gather(layout, kernel, stride, pads)
        assert got.shape == want.shape and got.dtype == want.dtype and got.flags.c_contiguous
        numpy.testing.assert_array_equal(
            got.view(f"u{got.itemsize}"), want.view(f"u{got.itemsize}")
        )
    assert cupy_on_cpu.kernel_calls == [f"convnet_im2col_gather_{dtype}"] * 2


def test_im2col_gather_covers_more_entries_than_threads(cupy_on_cpu, monkeypatch):
    monkeypatch.setattr(K, "MAX_BLOCKS", 1)
    x = numpy.random.default_rng(9).normal(size=(2, 3, 6, 6)).astype("float32")
    want = ops.im2col(ops.pad_spatial(x, (1, 1, 1, 1), xp=numpy), (3, 3), (1, 1), xp=numpy)
    numpy.testing.assert_array_equal(K.im2col_gather(x, (3, 3), (1, 1), (1, 1, 1, 1)), want)
