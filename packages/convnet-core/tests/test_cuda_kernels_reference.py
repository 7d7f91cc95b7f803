"""The NumPy references of the GPU kernels in convnet_core.cuda_kernels equal the code they
stand for (optim.Adam, Activation("relu"), ops.col2im).

These pin the math: tests-cuda then checks each CUDA kernel against its reference, so a
kernel that passes there computes what the CPU code computes.
"""

from __future__ import annotations

import convnet_core as cn
import numpy
import pytest
from convnet_core import cuda_kernels as K
from convnet_core import layers as L
from convnet_core import ops, optim
from convnet_core import tree as T


def random_tree(rng):
    return {
        "conv": {"W": rng.normal(size=(4, 2, 3, 3)), "b": rng.normal(size=4)},
        "relu": {},  # an empty node, as a layer without parameters has
        "dense": {"W": rng.normal(size=(5, 3))},
    }


def as_dtype(tree, dtype):
    return T.map(lambda a: numpy.asarray(a, dtype=dtype), tree)


def reference_adam_steps(opt, params, grads_per_step, *, decoupled):
    """Run `adam_update_reference` leaf by leaf with the 0-d scalars of
    `adam_scalars_reference`: together, what optim.Adam computes."""
    m = T.map(numpy.zeros_like, params)
    v = T.map(numpy.zeros_like, params)
    lr = numpy.asarray(opt.lr, dtype="float64")
    betas = {"beta1": opt.beta1, "beta2": opt.beta2}
    for t, grads in enumerate(grads_per_step, start=1):
        step = numpy.int64(t)  # a NumPy scalar, as optim's step is after its first update
        new = {}
        flat_p, flat_g, flat_m, flat_v = (T.flatten(x) for x in (params, grads, m, v))
        for key, p in flat_p.items():
            lr_, step_size, inv_sqrt_bias2 = K.adam_scalars_reference(
                step, lr, dtype=p.dtype, **betas
            )
            new[key] = K.adam_update_reference(
                p,
                flat_g[key],
                flat_m[key],
                flat_v[key],
                lr=lr_,
                step_size=step_size,
                inv_sqrt_bias2=inv_sqrt_bias2,
                beta1=opt.beta1,
                beta2=opt.beta2,
                eps=opt.eps,
                weight_decay=0.0 if decoupled else opt.weight_decay,
                decoupled_weight_decay=opt.weight_decay if decoupled else 0.0,
            )
        params, m, v = (
            T.unflatten(params, {key: out[i] for key, out in new.items()}) for i in range(3)
        )
    return params, m, v


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: optim.adam(lr=1e-2),
        lambda: optim.adam(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1),
        lambda: optim.adamw(lr=1e-2, weight_decay=0.05),
    ],
    ids=["adam", "adam-l2", "adamw"],
)
def test_adam_reference_equals_optim_adam(make, dtype):
    rng = numpy.random.default_rng(0)
    opt = make()
    params = as_dtype(random_tree(rng), dtype)
    grads_per_step = [as_dtype(random_tree(rng), dtype) for _ in range(4)]

    state = opt.init(params)
    got = params
    for grads in grads_per_step:
        got, state = opt.update(got, grads, state)

    want, m, v = reference_adam_steps(
        opt, params, grads_per_step, decoupled=isinstance(opt, optim.AdamW)
    )
    for name, mine, theirs in (("params", want, got), ("m", m, state["m"]), ("v", v, state["v"])):
        for key, value in T.flatten(mine).items():
            assert value.dtype == numpy.dtype(dtype)
            numpy.testing.assert_array_equal(value, T.flatten(theirs)[key], err_msg=f"{name} {key}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_references_equal_the_relu_layer(dtype):
    rng = numpy.random.default_rng(1)
    x = rng.normal(size=(3, 4, 5, 5)).astype(dtype)
    x[0, 0, 0, :2] = 0.0  # ReLU's kink: the gradient there is 0, as in PyTorch
    dy = rng.normal(size=x.shape).astype(dtype)
    layer = L.Activation("relu")
    y, _, cache = cn.apply(layer, {}, {}, x, training=True)
    _, dx = cn.grad(layer, {}, cache, dy)

    y_ref = K.relu_forward_reference(x)
    numpy.testing.assert_array_equal(y_ref, y)
    assert y_ref.dtype == x.dtype
    dx_ref = K.relu_backward_reference(y_ref, dy)
    numpy.testing.assert_array_equal(dx_ref, dx)
    assert dx_ref.dtype == x.dtype


def test_relu_references_on_inf_and_nan():
    # what the fused kernels must reproduce: NaN passes forward; inf·0 is NaN backward
    x = numpy.array([numpy.nan, -numpy.inf, numpy.inf, -1.0, 2.0], dtype="float32")
    numpy.testing.assert_array_equal(
        K.relu_forward_reference(x), [numpy.nan, 0.0, numpy.inf, 0.0, 2.0]
    )
    y = numpy.array([0.0, 1.0, 0.0], dtype="float32")
    dy = numpy.array([numpy.inf, numpy.inf, 1.0], dtype="float32")
    with numpy.errstate(invalid="ignore"):
        dx = K.relu_backward_reference(y, dy)
    numpy.testing.assert_array_equal(dx, [numpy.nan, numpy.inf, 0.0])


# (N, C, Hp, Wp), kernel, stride: overlapping windows, stride 2, non-square, windows that
# leave the last rows unread, a kernel as big as the input
COL2IM_CASES = [
    ((2, 3, 7, 7), (3, 3), (1, 1)),
    ((2, 2, 9, 8), (3, 3), (2, 2)),
    ((1, 4, 6, 9), (2, 3), (1, 2)),
    ((3, 1, 8, 8), (3, 2), (3, 2)),
    ((2, 2, 5, 4), (5, 4), (1, 1)),
]


def random_blocks(rng, padded_shape, kernel, stride, dtype="float64"):
    n, c, hp, wp = padded_shape
    (kh, kw), (sh, sw) = kernel, stride
    ho = ops.conv_output_size(hp, kh, sh, 0)
    wo = ops.conv_output_size(wp, kw, sw, 0)
    return rng.normal(size=(c, kh, kw, n, ho, wo)).astype(dtype)


@pytest.mark.parametrize(("padded_shape", "kernel", "stride"), COL2IM_CASES)
def test_col2im_loop_equals_ops_col2im(padded_shape, kernel, stride):
    rng = numpy.random.default_rng(2)
    blocks = random_blocks(rng, padded_shape, kernel, stride, "float32")
    dcols = blocks.reshape(blocks.shape[0] * kernel[0] * kernel[1], -1)  # (C*kh*kw, N*Ho*Wo)
    want = ops.col2im(dcols, padded_shape, kernel, stride, xp=numpy)
    got = K.col2im_loop(blocks, padded_shape, stride, xp=numpy)
    assert got.shape == padded_shape and got.dtype == numpy.float32
    numpy.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("padded_shape", "kernel", "stride"), COL2IM_CASES)
def test_col2im_loop_is_the_adjoint_of_im2col(padded_shape, kernel, stride):
    # <im2col(x), c> = <x, col2im(c)> for every x and c: col2im is the transpose of im2col
    rng = numpy.random.default_rng(3)
    x = rng.normal(size=padded_shape)
    blocks = random_blocks(rng, padded_shape, kernel, stride)
    cols = ops.im2col(x, kernel, stride, xp=numpy)  # (C*kh*kw, N*Ho*Wo)
    lhs = numpy.vdot(cols.ravel(), blocks.ravel())
    rhs = numpy.vdot(x.ravel(), K.col2im_loop(blocks, padded_shape, stride, xp=numpy).ravel())
    numpy.testing.assert_allclose(lhs, rhs, rtol=1e-12)
