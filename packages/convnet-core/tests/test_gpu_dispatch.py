"""The wiring of the GPU fast paths, checked on the CPU.

On CuPy, optim.Adam/AdamW, Activation("relu"), MaxPool2D, BatchNorm2D, ops.im2col_padded,
ops.col2im and the softmax cross-entropy for integer labels hand their work to
convnet_core.cuda_kernels. Here each `is_cupy` check is made to answer yes and CuPy is
replaced by the CPU stand-in of the `cupy_on_cpu` fixture, which compiles each kernel's
CUDA source with g++. So the arguments the layers pass, the kernels themselves, and what the
layers do with the results are tested without a GPU: the results must equal the NumPy path's.
"""

from __future__ import annotations

import convnet_core as cn
import numpy
import pytest
from convnet_core import cuda_kernels as K
from convnet_core import layers as L
from convnet_core import losses, ops, optim, precision
from convnet_core import tree as T
from convnet_core.layers import activation, norm, pooling


def test_adam_and_adamw_run_the_fused_kernel(monkeypatch, cupy_on_cpu):
    rng = numpy.random.default_rng(0)
    params = {"W": rng.normal(size=(6, 4)).astype("float32"), "b": numpy.zeros(4, "float32")}
    grads = [T.map(lambda p: rng.normal(size=p.shape).astype("float32"), params) for _ in range(3)]
    for opt in (optim.adam(lr=1e-2, weight_decay=0.05, clip_norm=1.0), optim.adamw(lr=1e-2)):
        plain, plain_state = params, opt.init(params)
        for g in grads:
            plain, plain_state = opt.update(plain, g, plain_state)
        with monkeypatch.context() as patch:
            patch.setattr(optim, "is_cupy", lambda xp: True)
            fused, fused_state = params, opt.init(params)
            for g in grads:
                fused, fused_state = opt.update(fused, g, fused_state)
        for key, value in T.flatten((plain, plain_state)).items():
            numpy.testing.assert_array_equal(T.flatten((fused, fused_state))[key], value, key)
    # two optimizers, three steps: the step's scalars, then one launch per leaf (two)
    step = ["convnet_adam_scalars", "convnet_fused_adam", "convnet_fused_adam"]
    assert cupy_on_cpu.kernel_calls == step * (2 * 3)


def test_relu_layer_runs_the_fused_kernels(monkeypatch, cupy_on_cpu):
    layer = L.Activation("relu")
    rng = numpy.random.default_rng(1)
    x = rng.normal(size=(3, 4, 5, 5)).astype("float32")
    dy = rng.normal(size=x.shape).astype("float32")
    y, _, cache = cn.apply(layer, {}, {}, x, training=True)
    _, dx = cn.grad(layer, {}, cache, dy)
    monkeypatch.setattr(activation, "is_cupy", lambda xp: True)
    fy, _, fcache = cn.apply(layer, {}, {}, x, training=True)
    _, fdx = cn.grad(layer, {}, fcache, dy)
    assert cupy_on_cpu.kernel_calls == ["convnet_relu_forward", "convnet_relu_backward"]
    numpy.testing.assert_array_equal(fy, y)
    numpy.testing.assert_array_equal(fdx, dx)


@pytest.mark.parametrize("method", ["gather", "loop"])
def test_conv_backward_goes_through_col2im_on_gpu(monkeypatch, cupy_on_cpu, method):
    layer = L.Conv2D(3, (3, 2), stride=(2, 1), padding=1)
    params, state = cn.init(layer, (2, 7, 6), rng=2)
    rng = numpy.random.default_rng(3)
    x = rng.normal(size=(2, 2, 7, 6)).astype("float32")
    y, _, cache = cn.apply(layer, params, state, x, training=True)
    dy = rng.normal(size=y.shape).astype("float32")
    dparams, dx = cn.grad(layer, params, cache, dy)

    monkeypatch.setattr(ops, "is_cupy", lambda xp: True)
    monkeypatch.setattr(K, "COL2IM_ON_GPU", method)
    _, _, fcache = cn.apply(layer, params, state, x, training=True)
    fparams, fdx = cn.grad(layer, params, fcache, dy)
    gathers = [name for name in cupy_on_cpu.kernel_calls if "col2im" in name]
    assert gathers == (["convnet_col2im_gather_float32"] if method == "gather" else [])
    # the forward pass unfolded the input with one kernel, padding included
    assert cupy_on_cpu.kernel_calls[0] == "convnet_im2col_gather_float32"
    numpy.testing.assert_array_equal(fcache.cache[0], cache.cache[0])  # the same columns
    numpy.testing.assert_allclose(fdx, dx, rtol=1e-6, atol=1e-6)
    for key, value in dparams.items():
        numpy.testing.assert_array_equal(fparams[key], value)


def test_softmax_cross_entropy_runs_the_fused_kernel_for_integer_labels(monkeypatch, cupy_on_cpu):
    rng = numpy.random.default_rng(4)
    logits = rng.normal(size=(9, 10)).astype("float32")
    labels = rng.integers(0, 10, 9)
    want = losses.softmax_cross_entropy(logits, labels, xp=numpy)
    one_hot = losses.one_hot(labels, 10, xp=numpy)

    monkeypatch.setattr(losses, "is_cupy", lambda xp: True)
    got = losses.softmax_cross_entropy(logits, labels, xp=numpy)
    assert cupy_on_cpu.kernel_calls == ["convnet_softmax_xent_float32"]
    for got_part, want_part in zip(got, want, strict=True):
        numpy.testing.assert_allclose(got_part, want_part, rtol=1e-6, atol=1e-8)
    # one-hot targets, and a wrong label shape, keep the NumPy code and its errors
    losses.softmax_cross_entropy(logits, one_hot, xp=numpy)
    with pytest.raises(ValueError, match="labels must be"):
        losses.softmax_cross_entropy(logits, labels[:5], xp=numpy)
    assert cupy_on_cpu.kernel_calls == ["convnet_softmax_xent_float32"]


@pytest.mark.parametrize(("pool", "stride"), [((2, 2), None), ((3, 3), (2, 2))])
def test_maxpool_layer_runs_the_kernels(monkeypatch, cupy_on_cpu, pool, stride):
    layer = L.MaxPool2D(pool, stride=stride)
    rng = numpy.random.default_rng(5)
    x = rng.integers(-2, 3, (2, 3, 9, 8)).astype("float32")  # ties in many windows
    y, _, cache = cn.apply(layer, {}, {}, x, training=True)
    dy = rng.normal(size=y.shape).astype("float32")
    _, dx = cn.grad(layer, {}, cache, dy)

    monkeypatch.setattr(pooling, "is_cupy", lambda xp: True)
    fy, _, fcache = cn.apply(layer, {}, {}, x, training=True)
    _, fdx = cn.grad(layer, {}, fcache, dy)
    assert cupy_on_cpu.kernel_calls == [
        "convnet_maxpool_forward_float32_uint8",
        "convnet_maxpool_backward_float32_uint8",
    ]
    numpy.testing.assert_array_equal(fy, y)
    numpy.testing.assert_array_equal(fdx, dx)
    # float16 (mixed precision) runs the float32 kernels on widened copies
    hy, _, half_cache = cn.apply(layer, {}, {}, x.astype("float16"), training=True)
    _, hdx = cn.grad(layer, {}, half_cache, dy.astype("float16"))
    assert cupy_on_cpu.kernel_calls[2:] == cupy_on_cpu.kernel_calls[:2]
    assert hy.dtype == hdx.dtype == numpy.dtype("float16")
    numpy.testing.assert_array_equal(hy, y.astype("float16"))
    numpy.testing.assert_allclose(hdx, dx, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_batchnorm_layer_runs_the_kernels(monkeypatch, cupy_on_cpu, dtype):
    layer = L.BatchNorm2D()
    rng = numpy.random.default_rng(6)
    params, state = cn.init(layer, (3, 5, 4), rng=0, dtype=dtype)
    params = T.map(lambda a: (a + rng.normal(size=a.shape)).astype(dtype), params)
    x = rng.normal(1.0, 2.0, (4, 3, 5, 4)).astype(dtype)
    y, new_state, cache = cn.apply(layer, params, state, x, training=True)
    dy = rng.normal(size=y.shape).astype(dtype)
    grads, dx = cn.grad(layer, params, cache, dy)

    monkeypatch.setattr(norm, "is_cupy", lambda xp: True)
    fy, f_state, fcache = cn.apply(layer, params, state, x, training=True)
    fgrads, fdx = cn.grad(layer, params, fcache, dy)
    assert cupy_on_cpu.kernel_calls == [
        "convnet_batchnorm_statistics",
        "convnet_batchnorm_forward",
        "convnet_batchnorm_input_grad",
    ]
    if dtype == "float16":  # a chain of float16 operations, rounded once (as CuPy's float16
        # computes in float) or after each one (NumPy): equal within float16's precision
        check = lambda a, b: numpy.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)  # noqa: E731
    else:  # the same roundings in the same order: equal to the last bit
        check = numpy.testing.assert_array_equal
    check(fy, y)
    check(fdx, dx)
    for key in ("running_mean", "running_var"):
        assert f_state[key].dtype == numpy.dtype(dtype)
        check(f_state[key], new_state[key])
    assert not numpy.array_equal(new_state["running_var"], state["running_var"])  # it moved
    for key in ("gamma", "beta"):
        check(fgrads[key], grads[key])


def test_batchnorm_with_float32_statistics_and_float16_data_runs_the_statistics_kernel(
    monkeypatch, cupy_on_cpu
):
    # mixed precision: the running statistics stay float32 while x is float16
    layer = L.BatchNorm2D()
    params, state = cn.init(layer, (3, 5, 4), rng=0, dtype="float32")
    x = numpy.random.default_rng(7).normal(1.0, 2.0, (4, 3, 5, 4)).astype("float16")
    half_params = T.map(lambda a: a.astype("float16"), params)
    y, new_state, _ = cn.apply(layer, half_params, state, x, training=True)

    monkeypatch.setattr(norm, "is_cupy", lambda xp: True)
    fy, f_state, _ = cn.apply(layer, half_params, state, x, training=True)
    assert cupy_on_cpu.kernel_calls == ["convnet_batchnorm_statistics", "convnet_batchnorm_forward"]
    for key in ("running_mean", "running_var"):  # updated in float32, as the array code does
        assert f_state[key].dtype == numpy.float32
        numpy.testing.assert_array_equal(f_state[key], new_state[key])
        assert not numpy.array_equal(f_state[key], state[key])  # they moved
    # 1/√(σ²+eps) in float16: rounded once here, after each operation in NumPy
    numpy.testing.assert_allclose(fy, y, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("bad", [None, numpy.inf, numpy.nan])
def test_the_loss_scaler_unscales_and_checks_with_one_kernel_per_leaf(
    monkeypatch, cupy_on_cpu, bad
):
    rng = numpy.random.default_rng(8)
    grads = (
        {"W": rng.normal(0, 900, (6, 4)).astype("float16"), "b": numpy.ones(4, "float16")},
        {},
        {"gamma": rng.normal(0, 900, 3).astype("float32")},  # leaves of either width
    )
    if bad is not None:
        grads[2]["gamma"][1] = bad
    scaler = precision.DynamicLossScaler(scale=1024.0)
    want, want_finite = scaler.unscale_and_check(grads)

    monkeypatch.setattr(precision, "is_cupy", lambda xp: True)
    got, finite = scaler.unscale_and_check(grads)

    assert cupy_on_cpu.kernel_calls == ["convnet_unscale_and_check"] * 3
    assert finite.shape == () and bool(finite) == bool(want_finite) == (bad is None)
    for key, value in T.flatten(want).items():
        assert T.flatten(got)[key].dtype == numpy.float32
        numpy.testing.assert_array_equal(T.flatten(got)[key], value, key)


def test_the_loss_scaler_updates_in_one_kernel(monkeypatch, cupy_on_cpu):
    from test_precision import SCRIPT, scripted_scaler

    monkeypatch.setattr(precision, "is_cupy", lambda xp: True)
    scaler = scripted_scaler()  # scale and good_steps Python numbers: the first step's form
    for step, (finite, scale, good) in enumerate(SCRIPT):
        scaler = scaler._update_device(numpy.asarray(finite))  # what update runs on a GPU
        assert scaler.scale.dtype == numpy.float64 and scaler.good_steps.dtype == numpy.int64
        assert (float(scaler.scale), int(scaler.good_steps)) == (scale, good), f"step {step}"
    assert cupy_on_cpu.kernel_calls == ["convnet_loss_scale_update"] * len(SCRIPT)
