"""The wiring of the GPU fast paths, checked on the CPU.

On CuPy, optim.Adam/AdamW, Activation("relu") and ops.col2im hand their work to
convnet_core.cuda_kernels. Here each `is_cupy` check is made to answer yes and each
CUDA kernel is replaced by its NumPy reference (or, for col2im, by a transcription of the
kernel's index arithmetic), so the arguments the layers pass, and what they do with the
results, are tested without a GPU: the results must equal the NumPy path's.
"""

from __future__ import annotations

import convnet_core as cn
import numpy
import pytest
from convnet_core import cuda_kernels as K
from convnet_core import layers as L
from convnet_core import ops, optim
from convnet_core import tree as T
from convnet_core.layers import activation


def test_adam_and_adamw_hand_the_same_arguments_to_the_fused_kernel(monkeypatch):
    calls = []

    def fused_on_numpy(*arrays, **options):
        calls.append(sorted(options))
        return K.adam_update_reference(*arrays, **options, xp=numpy)

    rng = numpy.random.default_rng(0)
    params = {"W": rng.normal(size=(6, 4)).astype("float32"), "b": numpy.zeros(4, "float32")}
    grads = [T.map(lambda p: rng.normal(size=p.shape).astype("float32"), params) for _ in range(3)]
    for opt in (optim.adam(lr=1e-2, weight_decay=0.05, clip_norm=1.0), optim.adamw(lr=1e-2)):
        plain, plain_state = params, opt.init(params)
        for g in grads:
            plain, plain_state = opt.update(plain, g, plain_state)
        with monkeypatch.context() as patch:
            patch.setattr(optim, "is_cupy", lambda xp: True)
            patch.setattr(K, "fused_adam_update", fused_on_numpy)
            fused, fused_state = params, opt.init(params)
            for g in grads:
                fused, fused_state = opt.update(fused, g, fused_state)
        for key, value in T.flatten((plain, plain_state)).items():
            numpy.testing.assert_array_equal(T.flatten((fused, fused_state))[key], value, key)
    assert len(calls) == 2 * 3 * 2  # two optimizers, three steps, two leaves
    assert "weight_decay" in calls[0] and "decoupled_weight_decay" in calls[-1]


def test_relu_layer_uses_the_fused_kernels(monkeypatch):
    layer = L.Activation("relu")
    rng = numpy.random.default_rng(1)
    x = rng.normal(size=(3, 4, 5, 5)).astype("float32")
    dy = rng.normal(size=x.shape).astype("float32")
    y, _, cache = cn.apply(layer, {}, {}, x, training=True)
    _, dx = cn.grad(layer, {}, cache, dy)
    used = []
    monkeypatch.setattr(activation, "is_cupy", lambda xp: True)
    monkeypatch.setattr(
        K, "fused_relu_forward", lambda a: used.append("f") or K.relu_forward_reference(a)
    )
    monkeypatch.setattr(
        K, "fused_relu_backward", lambda a, b: used.append("b") or K.relu_backward_reference(a, b)
    )
    fy, _, fcache = cn.apply(layer, {}, {}, x, training=True)
    _, fdx = cn.grad(layer, {}, fcache, dy)
    assert used == ["f", "b"]
    numpy.testing.assert_array_equal(fy, y)
    numpy.testing.assert_array_equal(fdx, dx)


def gather_transcribed(blocks, padded_shape, stride):
    """The col2im_gather kernel's arithmetic, one output pixel at a time (small inputs)."""
    n_total, c_total, hp, wp = padded_shape
    _, kh, kw, _, ho, wo = blocks.shape
    sh, sw = stride
    dx = numpy.zeros((c_total, n_total, hp, wp), dtype=blocks.dtype)
    for c, n, y, x in numpy.ndindex(c_total, n_total, hp, wp):
        total = 0.0
        for i in range(kh):
            for j in range(kw):
                dy, dxx = y - i, x - j
                if dy >= 0 and dxx >= 0 and dy % sh == 0 and dxx % sw == 0:
                    if dy // sh < ho and dxx // sw < wo:
                        total += blocks[c, i, j, n, dy // sh, dxx // sw]
        dx[c, n, y, x] = total
    return dx.transpose(1, 0, 2, 3)


@pytest.mark.parametrize("method", ["gather", "loop"])
def test_conv_backward_goes_through_col2im_on_gpu(monkeypatch, method):
    layer = L.Conv2D(3, (3, 2), stride=(2, 1), padding=1)
    params, state = cn.init(layer, (2, 7, 6), rng=2)
    rng = numpy.random.default_rng(3)
    x = rng.normal(size=(2, 2, 7, 6)).astype("float32")
    y, _, cache = cn.apply(layer, params, state, x, training=True)
    dy = rng.normal(size=y.shape).astype("float32")
    dparams, dx = cn.grad(layer, params, cache, dy)

    used = []
    monkeypatch.setattr(ops, "is_cupy", lambda xp: True)
    monkeypatch.setattr(K, "_cupy", lambda: numpy)  # the loop runs on NumPy here
    monkeypatch.setattr(K, "COL2IM_ON_GPU", method)
    monkeypatch.setattr(
        K, "col2im_gather", lambda *args: used.append("gather") or gather_transcribed(*args)
    )
    _, _, fcache = cn.apply(layer, params, state, x, training=True)
    fparams, fdx = cn.grad(layer, params, fcache, dy)
    assert used == (["gather"] if method == "gather" else [])
    numpy.testing.assert_allclose(fdx, dx, rtol=1e-6, atol=1e-6)
    for key, value in dparams.items():
        numpy.testing.assert_array_equal(fparams[key], value)
