"""The same computations on CuPy and NumPy give the same numbers.

Marked `cuda` and run with CONVNET_TEST_DEVICE=cuda, by two sessions:

- tests-cuda, where `cp` is CuPy on the GPU, and a missing GPU is an error, never a skip;
- tests-cuda-on-cpu, where `cp` is NumPy dressed as CuPy (tests/cupy_on_numpy.py): its
  arrays refuse NumPy as CuPy's do, its kernels run their CUDA source compiled by g++, and
  it refuses host reads where a GPU run checks that the host never waits. So every
  `is_cupy` branch of the packages (the fused kernels, the device-side optimizer scalars
  and loss scaling, fit's batched finiteness checks, device batches) runs on every
  machine, not only on a GPU.

CuPy is imported inside the `cp` fixture, so collecting this file needs no CuPy.

Tolerances are float32 ones: a GPU sums in another order (and fuses multiply-adds), so
results agree to a few units in the last place, not bit for bit.
"""

from __future__ import annotations

import os

import convnet_core as cn
import numpy
import pytest
from convnet_core import backend, cuda_kernels, losses, ops, optim, precision
from convnet_core import layers as L
from convnet_core import tree as T
from host_waits import HostWaitedForTheGPU, assert_never_waits_for_the_gpu
from test_cuda_kernels_reference import COL2IM_CASES as REFERENCE_COL2IM_CASES

pytestmark = [
    pytest.mark.cuda,
    # a plain `pytest` reports these as left for tests-cuda and tests-cuda-on-cpu; those
    # set CONVNET_TEST_DEVICE=cuda, and then a missing GPU is an error, never a skip
    pytest.mark.skipif(
        os.environ.get("CONVNET_TEST_DEVICE") != "cuda",
        reason="GPU equivalence: run by `nox -s tests-cuda` and `nox -s tests-cuda-on-cpu`",
    ),
]

RTOL = 1e-4


@pytest.fixture(scope="module")
def cp():
    """The cupy module; an error (never a skip) when no GPU is usable."""
    return backend.array_module("cuda")


def host(tree):
    return backend.to_host(tree)


def largest_magnitude(leaves):
    return max((float(numpy.abs(a).max()) for a in leaves if numpy.size(a)), default=0.0)


def assert_close(gpu, cpu, *, rtol=RTOL, what=""):
    """Every leaf of `gpu` (CuPy) equals the matching leaf of `cpu` within float32 rounding:
    |gpu - cpu| <= rtol * (|cpu| + scale), scale = max(max|leaf|/10, max|tree|/100).

    So tiny values are not judged alone, and neither is a leaf of pure rounding noise
    next to large ones (a conv bias followed by BatchNorm has gradient 0 in exact
    arithmetic; computed, it is about 1e-6, different for each summation order).
    """
    flat_gpu, flat_cpu = T.flatten(host(gpu)), T.flatten(host(cpu))
    assert flat_gpu.keys() == flat_cpu.keys(), what
    tree_scale = largest_magnitude(flat_cpu.values()) / 100
    for key, want in flat_cpu.items():
        got = flat_gpu[key]
        want = numpy.asarray(want)
        assert got.shape == want.shape and got.dtype == want.dtype, f"{what} {key}"
        scale = max(largest_magnitude([want]) / 10, tree_scale)
        numpy.testing.assert_allclose(
            got, want, rtol=rtol, atol=rtol * scale, err_msg=f"{what} {key}"
        )


def readme_network():
    return L.Sequential(cn.presets.readme_layers())


def bn_dropout_network(rate=0.3):
    """A small network with every kind of layer the `best` preset uses."""
    return L.Sequential(
        (
            L.Conv2D(8, (3, 3)),
            L.BatchNorm2D(),
            L.Activation("relu"),
            L.MaxPool2D((2, 2)),
            L.Conv2D(8, (3, 3)),
            L.BatchNorm2D(),
            L.Activation("relu"),
            L.MaxPool2D((2, 2)),
            L.Flatten(),
            L.Dropout(rate),
            L.Dense(32),
            L.Activation("relu"),
            L.Dense(10),
        )
    )


# layer factory, per-sample input shape
LAYER_CASES = {
    "conv-same": (lambda: L.Conv2D(4, (3, 3)), (3, 9, 9)),
    "conv-valid-stride2": (lambda: L.Conv2D(5, (3, 3), stride=2, padding="valid"), (2, 11, 10)),
    "conv-pad1-nonsquare": (lambda: L.Conv2D(3, (2, 5), padding=1), (2, 7, 8)),
    "conv-same-even-kernel-stride2": (lambda: L.Conv2D(4, (4, 4), stride=2), (3, 9, 9)),
    "conv-1x1-nobias": (lambda: L.Conv2D(6, (1, 1), use_bias=False), (4, 5, 5)),
    "maxpool": (lambda: L.MaxPool2D((2, 2)), (3, 8, 8)),
    "maxpool-overlapping-odd": (lambda: L.MaxPool2D((3, 3), stride=2), (2, 9, 9)),
    "maxpool-3x2-leftover": (lambda: L.MaxPool2D((3, 2)), (2, 8, 7)),
    "avgpool": (lambda: L.AvgPool2D((2, 2)), (3, 8, 8)),
    "avgpool-stride1": (lambda: L.AvgPool2D((3, 3), stride=1), (2, 7, 6)),
    "globalavgpool": (lambda: L.GlobalAvgPool2D(), (3, 5, 5)),
    "batchnorm": (lambda: L.BatchNorm2D(), (4, 6, 6)),
    "dense": (lambda: L.Dense(7), (12,)),
    "dense-nobias": (lambda: L.Dense(5, use_bias=False), (9,)),
    "flatten": (lambda: L.Flatten(), (2, 3, 4)),
    **{
        f"activation-{name}": (lambda name=name: L.Activation(name), (10,))
        for name in ("relu", "leaky_relu", "sigmoid", "tanh", "softmax", "gelu")
    },
    "relu-4d": (lambda: L.Activation("relu"), (3, 6, 6)),
    "residual": (
        lambda: L.Residual(L.Sequential((L.Conv2D(3, (3, 3)), L.Activation("relu")))),
        (3, 6, 6),
    ),
    "residual-projection": (
        lambda: L.Residual(L.Conv2D(4, (3, 3), stride=2), L.Conv2D(4, (1, 1), stride=2)),
        (2, 8, 8),
    ),
    "readme-model": (readme_network, (1, 28, 28)),
    "bn-model-no-dropout": (lambda: bn_dropout_network(rate=0.0), (1, 16, 16)),
}


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_same_seed_same_initial_weights(cp, name):
    make, shape = LAYER_CASES[name]
    params_cpu, state_cpu = cn.init(make(), shape, rng=7)
    params_gpu, state_gpu = cn.init(make(), shape, rng=7, xp=cp)
    for leaf in T.leaves((params_gpu, state_gpu)):
        assert isinstance(leaf, cp.ndarray)
    for gpu, cpu in ((params_gpu, params_cpu), (state_gpu, state_cpu)):
        flat_cpu = T.flatten(cpu)
        for key, value in T.flatten(host(gpu)).items():
            numpy.testing.assert_array_equal(value, flat_cpu[key], err_msg=f"{name} {key}")


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_forward_and_backward_match_numpy(cp, name):
    make, shape = LAYER_CASES[name]
    layer = make()
    rng = numpy.random.default_rng(1)
    params, state = cn.init(layer, shape, rng=3)
    x = rng.normal(size=(5, *shape)).astype("float32")
    y, new_state, cache = cn.apply(layer, params, state, x, training=True)
    dy = rng.normal(size=y.shape).astype("float32")
    dparams, dx = cn.grad(layer, params, cache, dy)

    gparams, gstate = backend.to_device((params, state), cp)
    gy, gnew_state, gcache = cn.apply(layer, gparams, gstate, cp.asarray(x), training=True, xp=cp)
    assert isinstance(gy, cp.ndarray)
    gdparams, gdx = cn.grad(layer, gparams, gcache, cp.asarray(dy), xp=cp)
    assert_close(gy, y, what=f"{name} forward")
    assert_close(gnew_state, new_state, what=f"{name} state")
    assert_close(gdparams, dparams, what=f"{name} dparams")
    assert_close(gdx, dx, what=f"{name} dx")
    # inference too (BatchNorm's running statistics, no cache)
    y_eval, _, none = cn.apply(layer, params, new_state, x)
    gy_eval, _, gnone = cn.apply(layer, gparams, gnew_state, cp.asarray(x), xp=cp)
    assert none is None and gnone is None
    assert_close(gy_eval, y_eval, what=f"{name} inference")


def test_dropout_on_the_gpu_draws_its_mask_there(cp):
    layer = L.Dropout(0.25)
    x = cp.asarray(numpy.random.default_rng(2).uniform(1.0, 2.0, (64, 1000)).astype("float32"))
    y, _, cache = cn.apply(layer, {}, {}, x, training=True, rng=cp.random.default_rng(0), xp=cp)
    assert isinstance(y, cp.ndarray) and y.dtype == cp.float32
    kept = y != 0
    dropped = 1.0 - float(kept.mean())
    assert abs(dropped - 0.25) < 0.01
    cp.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-6)
    dy = cp.ones_like(x)
    _, dx = cn.grad(layer, {}, cache, dy, xp=cp)
    cp.testing.assert_allclose(dx, kept / cp.float32(0.75), rtol=1e-6)
    y_eval, _, _ = cn.apply(layer, {}, {}, x, xp=cp)
    assert y_eval is x


@pytest.mark.parametrize(
    ("loss", "labels"),
    [
        (losses.softmax_cross_entropy, "int"),
        (losses.softmax_cross_entropy, "onehot"),
        (losses.mse, "dense"),
        (losses.huber, "dense"),
    ],
)
def test_losses_match_numpy(cp, loss, labels):
    rng = numpy.random.default_rng(4)
    logits = rng.normal(0, 3, (16, 10)).astype("float32")
    target = {
        "int": rng.integers(0, 10, 16),
        "onehot": numpy.eye(10, dtype="float32")[rng.integers(0, 10, 16)],
        "dense": rng.normal(size=(16, 10)).astype("float32"),
    }[labels]
    value, grad = loss(logits, target, xp=numpy)
    gvalue, ggrad = loss(cp.asarray(logits), cp.asarray(target), xp=cp)
    assert isinstance(gvalue, cp.ndarray) and gvalue.shape == ()  # stays on the device
    assert_close({"value": gvalue, "grad": ggrad}, {"value": numpy.asarray(value), "grad": grad})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_fused_loss_matches_numpy_on_a_full_batch(cp, dtype):
    # integer labels take cuda_kernels.fused_softmax_cross_entropy: 512 rows, 4 blocks
    rng = numpy.random.default_rng(5)
    logits = rng.normal(0, 3, (512, 10)).astype(dtype)
    labels = rng.integers(0, 10, 512)
    value, grad = losses.softmax_cross_entropy(logits, labels, xp=numpy)
    gvalue, ggrad = losses.softmax_cross_entropy(cp.asarray(logits), cp.asarray(labels), xp=cp)
    assert_close({"value": gvalue, "grad": ggrad}, {"value": numpy.asarray(value), "grad": grad})
    labels[7] = 10  # not a class: NumPy raises, the GPU gives a NaN loss
    gvalue, _ = losses.softmax_cross_entropy(cp.asarray(logits), cp.asarray(labels), xp=cp)
    assert numpy.isnan(float(gvalue))


OPTIMIZERS = {
    "sgd": lambda: optim.sgd(lr=0.1),
    "sgd-nesterov-decay-clip": lambda: optim.sgd(
        lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, clip_norm=1.0
    ),
    "adam": lambda: optim.adam(lr=1e-2),
    "adam-l2-clip": lambda: optim.adam(lr=1e-2, weight_decay=1e-2, clip_norm=0.5),
    "adamw": lambda: optim.adamw(lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda: optim.rmsprop(lr=1e-3),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_steps_match_numpy(cp, name):
    opt = OPTIMIZERS[name]()
    rng = numpy.random.default_rng(5)
    params = {"W": rng.normal(size=(8, 3, 3, 3)), "b": rng.normal(size=8), "none": {}}
    params = T.map(lambda a: a.astype("float32"), params)
    grads = [T.map(lambda a: rng.normal(size=a.shape).astype("float32"), params) for _ in range(5)]
    state = opt.init(params)
    gparams = backend.to_device(params, cp)
    gstate = opt.init(gparams)
    for g in grads:
        params, state = opt.update(params, g, state)
        gparams, gstate = opt.update(gparams, backend.to_device(g, cp), gstate)
    assert_close(gparams, params, what=name)
    assert_close(gstate, state, what=f"{name} state")


# ---------------------------------------------------------------------------------------
# the fused kernels against their NumPy references


@pytest.mark.parametrize("decoupled", [False, True], ids=["adam-l2", "adamw"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_adam_matches_its_reference(cp, dtype, decoupled):
    rng = numpy.random.default_rng(6)
    p, g, m = (rng.normal(size=(33, 17)).astype(dtype) for _ in range(3))
    v = rng.uniform(0, 1, (33, 17)).astype(dtype)
    scalars = {
        "lr": numpy.asarray(3e-3, dtype),
        "step_size": numpy.asarray(3e-3 / (1 - 0.9**4), dtype),
        "inv_sqrt_bias2": numpy.asarray(1 / (1 - 0.999**4) ** 0.5, dtype),
    }
    options = dict(beta1=0.9, beta2=0.999, eps=1e-8)
    options |= dict(decoupled_weight_decay=0.1) if decoupled else dict(weight_decay=0.01)
    want = cuda_kernels.adam_update_reference(p, g, m, v, **scalars, **options)
    got = cuda_kernels.fused_adam_update(
        *(cp.asarray(a) for a in (p, g, m, v)),
        **{k: cp.asarray(s) for k, s in scalars.items()},
        **options,
    )
    rtol = 1e-6 if dtype == "float32" else 1e-13
    for name, a, b in zip(("param", "m", "v"), got, want, strict=True):
        assert a.dtype == numpy.dtype(dtype)
        numpy.testing.assert_allclose(a.get(), b, rtol=rtol, atol=rtol * 1e-2, err_msg=name)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_fused_relu_matches_its_reference(cp, dtype):
    rng = numpy.random.default_rng(7)
    x = rng.normal(size=(4, 8, 5, 5)).astype(dtype)
    x.flat[:4] = [numpy.nan, numpy.inf, -numpy.inf, 0.0]
    dy = rng.normal(size=x.shape).astype(dtype)
    dy.flat[4:6] = [numpy.inf, numpy.nan]
    with numpy.errstate(invalid="ignore"):
        y = cuda_kernels.relu_forward_reference(x)
        dx = cuda_kernels.relu_backward_reference(y, dy)
    gy = cuda_kernels.fused_relu_forward(cp.asarray(x))
    gdx = cuda_kernels.fused_relu_backward(gy, cp.asarray(dy))
    assert gy.dtype == gdx.dtype == numpy.dtype(dtype)
    numpy.testing.assert_array_equal(gy.get(), y)
    numpy.testing.assert_array_equal(gdx.get(), dx)


def test_fused_relu_keeps_the_channel_major_layout(cp):
    # Conv2D hands on (N, C, H, W) views of (C, N, H, W) memory; ReLU must not reorder them
    x = cp.random.standard_normal((8, 4, 6, 6), dtype=cp.float32).transpose(1, 0, 2, 3)
    y = cuda_kernels.fused_relu_forward(x)
    dx = cuda_kernels.fused_relu_backward(y, x)
    assert y.strides == x.strides and dx.strides == x.strides
    numpy.testing.assert_array_equal(y.get(), numpy.maximum(x.get(), 0))


COL2IM_CASES = [
    *REFERENCE_COL2IM_CASES,
    ((64, 8, 28, 28), (3, 3), (1, 1)),  # the README model's first conv, batch 64
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("padded_shape", "kernel", "stride"), COL2IM_CASES)
def test_col2im_gather_matches_the_loop(cp, padded_shape, kernel, stride, dtype):
    n, c, hp, wp = padded_shape
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = ops.conv_output_size(hp, kh, sh, 0), ops.conv_output_size(wp, kw, sw, 0)
    rng = numpy.random.default_rng(8)
    dcols = rng.normal(size=(c * kh * kw, n * ho * wo)).astype(dtype)
    want = ops.col2im(dcols, padded_shape, kernel, stride, xp=numpy)
    blocks = cp.asarray(dcols).reshape(c, kh, kw, n, ho, wo)
    got = cuda_kernels.col2im_gather(blocks, padded_shape, stride)
    assert got.shape == padded_shape and got.dtype == numpy.dtype(dtype)
    numpy.testing.assert_allclose(got.get(), want, rtol=1e-6, atol=1e-6)
    # the loop on CuPy, and any strides (here a copy laid out differently, read as a view)
    loop = cuda_kernels.col2im_loop(blocks, padded_shape, stride, xp=cp)
    numpy.testing.assert_allclose(loop.get(), want, rtol=1e-6, atol=1e-6)
    other_layout = cp.ascontiguousarray(blocks.transpose(3, 0, 1, 2, 4, 5)).transpose(
        1, 2, 3, 0, 4, 5
    )
    strided = cuda_kernels.col2im_gather(other_layout, padded_shape, stride)
    numpy.testing.assert_allclose(strided.get(), want, rtol=1e-6, atol=1e-6)


def test_conv_on_the_gpu_uses_both_col2im_paths_alike(cp, monkeypatch):
    layer = L.Conv2D(6, (3, 3), stride=2)
    params, state = cn.init(layer, (3, 9, 9), rng=0, xp=cp)
    x = cp.asarray(numpy.random.default_rng(9).normal(size=(4, 3, 9, 9)).astype("float32"))
    results = {}
    for method in ("gather", "loop"):
        monkeypatch.setattr(cuda_kernels, "COL2IM_ON_GPU", method)
        y, _, cache = cn.apply(layer, params, state, x, training=True, xp=cp)
        results[method] = cn.grad(layer, params, cache, cp.ones_like(y), xp=cp)[1].get()
    numpy.testing.assert_allclose(results["gather"], results["loop"], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------
# training


def synthetic_mnist(n, seed=0):
    rng = numpy.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 1, 28, 28)).astype("float32")
    y = rng.integers(0, 10, n)
    x[numpy.arange(n), 0, y * 2 + 3, 4:24] += 2.0  # a class-dependent bright row
    return x, y


def test_custom_loop_steps_with_adam_match_numpy(cp):
    net = readme_network()
    x, y = synthetic_mnist(128)
    opt = optim.adam(lr=1e-3)
    results = {}
    for xp in (numpy, cp):
        params, state = cn.init(net, (1, 28, 28), rng=0, xp=xp)
        opt_state = opt.init(params)
        for step in range(4):
            xb, yb = (
                xp.asarray(x[step * 32 : (step + 1) * 32]),
                xp.asarray(y[step * 32 : (step + 1) * 32]),
            )
            logits, state, cache = cn.apply(net, params, state, xb, training=True, xp=xp)
            loss, dlogits = losses.softmax_cross_entropy(logits, yb, xp=xp)
            grads, _ = cn.grad(net, params, cache, dlogits, xp=xp, input_grad=False)
            params, opt_state = opt.update(params, grads, opt_state)
        results[xp.__name__] = (params, opt_state, loss)
    assert_close(results["cupy"][0], results["numpy"][0], rtol=1e-3, what="params")
    assert_close(results["cupy"][1], results["numpy"][1], rtol=1e-3, what="opt_state")


def test_model_fit_matches_numpy(cp):
    x, y = synthetic_mnist(512, seed=1)
    models = {}
    for device in ("cpu", "cuda"):
        model = cn.Model(list(readme_network().layers), seed=0, device=device)
        model.compile(loss="categorical_crossentropy", optimizer="adam", lr=1e-3)
        model.fit((x, y), epochs=2, batch_size=64, verbose=False)
        models[device] = model
    gpu, cpu = models["cuda"], models["cpu"]
    assert gpu.xp is cp and isinstance(T.leaves(gpu.params)[0], cp.ndarray)
    numpy.testing.assert_allclose(gpu.history["loss"], cpu.history["loss"], rtol=1e-3)
    assert gpu.history["acc"] == pytest.approx(cpu.history["acc"], abs=2 / 512)
    assert_close(gpu.params, cpu.params, rtol=1e-2, what="params after fit")
    probabilities = gpu.predict(x[:100])
    numpy.testing.assert_allclose(host(probabilities), cpu.predict(x[:100]), atol=1e-3)


def test_mixed_precision_step_on_the_gpu_matches_a_float32_step(cp):
    net = bn_dropout_network(rate=0.0)
    x, y = synthetic_mnist(64, seed=2)
    x, y = cp.asarray(x[:, :, :16, :16]), cp.asarray(y)
    params, state = cn.init(net, (1, 16, 16), rng=1, xp=cp)
    opt = optim.sgd(lr=1.0)  # the parameter change is minus the gradient
    logits, _, cache = cn.apply(net, params, state, x, training=True, xp=cp)
    _, dlogits = losses.softmax_cross_entropy(logits, y, xp=cp)
    grads32, _ = cn.grad(net, params, cache, dlogits, xp=cp, input_grad=False)
    # 1024 keeps these gradients inside float16 (2**16, the scaler's start, overflows it)
    out = precision.mixed_precision_step(
        net, params, state, opt.init(params), precision.DynamicLossScaler(scale=1024.0), x, y,
        optimizer=opt, loss_fn=losses.softmax_cross_entropy, xp=cp,
    )  # fmt: skip
    new_params, new_state, _, scaler, loss, _, finite = out
    assert bool(finite) and float(scaler.scale) == 1024.0
    assert {leaf.dtype for leaf in T.leaves((new_params, new_state))} == {numpy.dtype("float32")}
    # float16 rounding, judged as a norm against each leaf's, or a tenth of the largest for
    # the conv biases followed by BatchNorm, whose exact gradient is 0. (Not element by
    # element: float16 can flip a ReLU or a max-pool winner that float32 puts the other side
    # of a near tie, and that moves one element's share of the gradient whole.)
    flat32 = T.flatten(host(grads32))
    tenth_of_largest = max(numpy.linalg.norm(g) for g in flat32.values()) / 10
    for key, g in flat32.items():
        step = T.flatten(host(params))[key] - T.flatten(host(new_params))[key]
        error = numpy.linalg.norm(step - g) / max(numpy.linalg.norm(g), tenth_of_largest)
        assert error < 5e-2, (key, error)  # here: 2.4% for 0/W (a flip), the rest <= 1.3%


# ---------------------------------------------------------------------------------------
# nothing goes to the host inside a training step
#
# tests/host_waits.py holds the GPU back while the step is queued: a step that returns
# before the hold ends never waited for the GPU (a host read, a synchronize). Each step
# runs twice on the same stream first, so its kernels are compiled and CuPy's memory pool,
# which keeps a free list per stream, has its blocks.


HOST_WAITS = {
    "float": lambda cp, x: float(x.sum()),
    "get": lambda cp, x: x.get(),
    "bool": lambda cp, x: bool(x[0] > 0),
    "synchronize": lambda cp, x: cp.cuda.get_current_stream().synchronize(),
}


@pytest.mark.parametrize("wait", sorted(HOST_WAITS))
def test_holding_the_gpu_catches_a_host_wait(cp, wait):
    # the detector can fail: work that waits for the GPU is caught
    x = cp.arange(10, dtype=cp.float32)
    with cp.cuda.Stream(), pytest.raises(HostWaitedForTheGPU):
        assert_never_waits_for_the_gpu(cp, lambda: HOST_WAITS[wait](cp, x), hold_s=0.5)


def test_holding_the_gpu_lets_queued_work_through(cp):
    # warmed up: a kernel compiled inside the short hold (this test run alone, on an empty
    # kernel cache) would take longer than the hold without any wait for the GPU
    x = cp.arange(10, dtype=cp.float32)
    with cp.cuda.Stream():
        total = assert_never_waits_for_the_gpu(
            cp, lambda: (x * 2 + 1).sum(), hold_s=0.5, warm_up=True
        )
    assert float(total) == 100.0


def training_step_parts(cp):
    net = bn_dropout_network(rate=0.3)
    x, y = synthetic_mnist(64, seed=3)
    x, y = cp.asarray(x[:, :, :16, :16]), cp.asarray(y)
    params, state = cn.init(net, (1, 16, 16), rng=2, xp=cp)
    opt = optim.adam(lr=1e-3, clip_norm=5.0)
    return net, x, y, params, state, opt, opt.init(params), cp.random.default_rng(0)


def test_a_float32_training_step_never_syncs(cp):
    net, x, y, params, state, opt, opt_state, rng = training_step_parts(cp)

    def step(params, state, opt_state):  # fit's step, its shape checks included
        logits, state, cache = cn.apply(net, params, state, x, training=True, rng=rng, xp=cp)
        loss, dlogits = losses.value_and_grad(losses.softmax_cross_entropy, logits, y, xp=cp)
        grads, _ = cn.grad(net, params, cache, dlogits, xp=cp, input_grad=False)
        params, opt_state = opt.update(params, grads, opt_state)
        return params, state, opt_state, loss

    with cp.cuda.Stream():
        for _ in range(2):
            params, state, opt_state, _ = step(params, state, opt_state)
        params, *_, loss = assert_never_waits_for_the_gpu(
            cp, lambda: step(params, state, opt_state)
        )
    assert numpy.isfinite(float(loss))


def test_a_mixed_precision_step_never_syncs(cp):
    net, x, y, params, state, opt, opt_state, rng = training_step_parts(cp)
    scaler = precision.DynamicLossScaler()

    def step(params, state, opt_state, scaler):
        return precision.mixed_precision_step(
            net, params, state, opt_state, scaler, x, y,
            optimizer=opt, loss_fn=losses.softmax_cross_entropy, rng=rng, xp=cp,
        )[:4]  # fmt: skip

    with cp.cuda.Stream():
        for _ in range(2):  # the scaler's state moves to the device at its first update
            params, state, opt_state, scaler = step(params, state, opt_state, scaler)
        assert isinstance(scaler.scale, cp.ndarray)
        *_, scaler = assert_never_waits_for_the_gpu(
            cp, lambda: step(params, state, opt_state, scaler)
        )
    assert isinstance(scaler.scale, cp.ndarray)


# ---------------------------------------------------------------------------------------
# saving on the GPU, loading on the CPU and back; data batches on the device


def test_save_on_gpu_load_on_cpu_and_back(cp, tmp_path):
    import convnet_io  # both sessions put every package on the path

    x, y = synthetic_mnist(128, seed=4)
    model = cn.Model(list(bn_dropout_network().layers), seed=0, device=cp)
    model.compile(loss="categorical_crossentropy", optimizer="adam", lr=1e-3)
    model.fit((x[:, :, :16, :16], y), epochs=1, batch_size=32, verbose=False)
    path = tmp_path / "gpu_model.h5"
    model.save(path)
    parts = convnet_io.load(path, parts=True)  # host NumPy arrays
    for key, value in T.flatten(host(model.params)).items():
        numpy.testing.assert_array_equal(T.flatten(parts.params)[key], value, err_msg=key)
    cpu, back = convnet_io.load(path, device="cpu"), convnet_io.load(path, device="cuda")
    assert cpu.xp is numpy and back.xp is cp
    sample = x[:50, :, :16, :16]
    want = host(model.predict(sample))
    numpy.testing.assert_allclose(cpu.predict(sample), want, atol=1e-5)
    numpy.testing.assert_allclose(host(back.predict(sample)), want, atol=1e-6)


def test_data_batches_arrive_on_the_gpu(cp):
    import convnet_data  # both sessions put every package on the path

    rng = numpy.random.default_rng(5)
    images = rng.integers(0, 256, (100, 1, 28, 28), dtype=numpy.uint8)
    labels = rng.integers(0, 10, 100)
    dataset = convnet_data.Dataset(images, labels, num_classes=10)
    on_cpu = list(dataset.batches(32, shuffle=True, seed=1))
    on_gpu = list(dataset.batches(32, shuffle=True, seed=1, xp=cp))
    assert len(on_gpu) == len(on_cpu) == 4
    for (gx, gy), (x, y) in zip(on_gpu, on_cpu, strict=True):
        assert isinstance(gx, cp.ndarray) and isinstance(gy, cp.ndarray)
        assert gx.dtype == cp.float32 and gx.device.id == cp.cuda.Device().id
        numpy.testing.assert_array_equal(gx.get(), x)
        numpy.testing.assert_array_equal(gy.get(), y)


def test_set_lr_does_not_read_a_device_learning_rate(cp):
    # a NumPy rate is read and checked on the host; a device one is stored unread
    state = optim.sgd(lr=0.1).init({"W": cp.zeros((2, 2), dtype="float32")})
    lr = cp.asarray(0.5) * 0.5  # computed on the device
    new = assert_never_waits_for_the_gpu(cp, lambda: optim.set_lr(state, lr), warm_up=True)
    assert optim.get_lr(new) == 0.25
