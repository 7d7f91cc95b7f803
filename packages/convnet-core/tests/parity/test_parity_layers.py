"""Every layer, forward and backward, against PyTorch as an oracle, in float32; and the
whole model Conv2D(8) relu MaxPool2D Conv2D(16) relu MaxPool2D Flatten Dense(64) relu
Dense(10) with its softmax cross-entropy (weights copied into torch; loss, logits and
every gradient compared)."""

from __future__ import annotations

import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L
from convnet_core import losses

pytestmark = pytest.mark.parity

RTOL, ATOL = 2e-5, 2e-5


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def rand(shape, seed, low=None, high=None):
    rng = numpy.random.default_rng(seed)
    if low is not None:
        return rng.integers(low, high, shape).astype("float32")
    return rng.standard_normal(shape).astype("float32")


def tensor(torch, array, grad=False):
    return torch.tensor(numpy.ascontiguousarray(array), requires_grad=grad)


def close(got, want, rtol=RTOL, atol=ATOL):
    want = want.detach().numpy() if hasattr(want, "detach") else want
    assert got.dtype == numpy.float32
    assert got.shape == want.shape
    numpy.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def ours(layer, params, state, x, dy, *, seed=None):
    """Forward and backward through convnet: (y, new_state, grads, dx)."""
    y, new_state, cache = cn.apply(layer, params, state, x, training=True, rng=seed)
    grads, dx = cn.grad(layer, params, cache, dy)
    return y, new_state, grads, dx


# --------------------------------------------------------------------------------------
# Conv2D

CONV_CASES = [
    # (filters, kernel, stride, padding, input per sample)
    (4, (3, 3), 1, "same", (3, 8, 8)),
    (3, (5, 5), 1, "same", (2, 9, 7)),
    (2, (2, 2), 1, "same", (2, 6, 6)),  # even kernel: the extra pixel after
    (4, (3, 3), 1, "valid", (3, 7, 9)),
    (2, (3, 3), 1, 2, (1, 5, 5)),
    (3, (3, 3), 2, 1, (2, 9, 9)),
    (3, (3, 3), 2, "same", (2, 8, 7)),
    (2, (2, 3), (2, 1), (1, 2), (3, 7, 6)),
    (5, (1, 1), 1, "valid", (4, 5, 5)),
    (2, (3, 3), 2, "valid", (1, 8, 8)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize(("filters", "kernel", "stride", "padding", "shape"), CONV_CASES, ids=str)
def test_conv2d(torch, filters, kernel, stride, padding, shape):
    layer = L.Conv2D(filters, kernel, stride=stride, padding=padding)
    params, state = cn.init(layer, shape, rng=0)
    params["b"] = rand((filters,), 9)
    x = rand((3, *shape), 1)
    dy = rand((3, *layer.output_shape(shape)), 2)
    y, _, grads, dx = ours(layer, params, state, x, dy)

    tx, tw, tb = (tensor(torch, a, True) for a in (x, params["W"], params["b"]))
    top, bottom, left, right = layer.pads(*shape[1:])
    padded = torch.nn.functional.pad(tx, (left, right, top, bottom))
    ty = torch.nn.functional.conv2d(padded, tw, tb, stride=layer.stride)
    ty.backward(tensor(torch, dy))
    close(y, ty)
    close(dx, tx.grad)
    close(grads["W"], tw.grad, rtol=1e-4, atol=1e-4)
    close(grads["b"], tb.grad, rtol=1e-4, atol=1e-4)
    if padding == "same" and layer.stride == (1, 1):  # torch's own "same" rule agrees
        ty_same = torch.nn.functional.conv2d(tx, tw, tb, padding="same")
        close(y, ty_same)


# --------------------------------------------------------------------------------------
# pooling

POOL_CASES = [
    ((2, 2), None, (3, 8, 8)),
    ((2, 2), None, (2, 7, 9)),  # odd: the last row/column dropped
    ((3, 3), (2, 2), (2, 9, 9)),  # overlapping
    ((2, 3), (1, 2), (2, 6, 9)),
    ((2, 2), (3, 3), (1, 8, 8)),  # gaps
    ((3, 2), (1, 1), (2, 5, 6)),
]


@pytest.mark.parametrize(("pool", "stride", "shape"), POOL_CASES, ids=str)
@pytest.mark.parametrize("values", ["distinct", "ties", "nan"])
def test_max_pool(torch, pool, stride, shape, values):
    layer = L.MaxPool2D(pool, stride=stride)
    x = rand((2, *shape), 3) if values == "distinct" else rand((2, *shape), 3, 0, 3)
    if values == "nan":  # ties and NaNs, some windows with several: dy goes to the last NaN
        x[numpy.random.default_rng(10).random(x.shape) < 0.2] = numpy.nan
    dy = rand((2, *layer.output_shape(shape)), 4)
    y, _, _, dx = ours(layer, {}, {}, x, dy)
    tx = tensor(torch, x, True)
    ty = torch.nn.functional.max_pool2d(tx, pool, stride=layer.strides)
    ty.backward(tensor(torch, dy))
    close(y, ty)
    close(dx, tx.grad)


@pytest.mark.parametrize(("pool", "stride", "shape"), POOL_CASES, ids=str)
def test_avg_pool(torch, pool, stride, shape):
    layer = L.AvgPool2D(pool, stride=stride)
    x = rand((2, *shape), 5)
    dy = rand((2, *layer.output_shape(shape)), 6)
    y, _, _, dx = ours(layer, {}, {}, x, dy)
    tx = tensor(torch, x, True)
    ty = torch.nn.functional.avg_pool2d(tx, pool, stride=layer.strides)
    ty.backward(tensor(torch, dy))
    close(y, ty)
    close(dx, tx.grad)


def test_global_avg_pool(torch):
    x, dy = rand((3, 4, 5, 6), 7), rand((3, 4), 8)
    y, _, _, dx = ours(L.GlobalAvgPool2D(), {}, {}, x, dy)
    tx = tensor(torch, x, True)
    ty = torch.nn.functional.adaptive_avg_pool2d(tx, 1).flatten(1)
    ty.backward(tensor(torch, dy))
    close(y, ty)
    close(dx, tx.grad)


# --------------------------------------------------------------------------------------
# BatchNorm2D


def batchnorm_pair(torch, channels, momentum, eps, seed):
    rng = numpy.random.default_rng(seed)
    params = {
        "gamma": rng.uniform(0.5, 2, channels).astype("float32"),
        "beta": rng.standard_normal(channels).astype("float32"),
    }
    state = {
        "running_mean": rng.standard_normal(channels).astype("float32"),
        "running_var": rng.uniform(0.5, 2, channels).astype("float32"),
    }
    # PyTorch's momentum is the weight of the new batch: torch_momentum = 1 - ours
    module = torch.nn.BatchNorm2d(channels, eps=eps, momentum=1 - momentum)
    with torch.no_grad():
        module.weight.copy_(tensor(torch, params["gamma"]))
        module.bias.copy_(tensor(torch, params["beta"]))
        module.running_mean.copy_(tensor(torch, state["running_mean"]))
        module.running_var.copy_(tensor(torch, state["running_var"]))
    return params, state, module


@pytest.mark.parametrize(("shape", "momentum"), [((2, 3, 5, 4), 0.9), ((1, 4, 3, 3), 0.7)])
def test_batchnorm_training(torch, shape, momentum):
    layer = L.BatchNorm2D(momentum=momentum, eps=1e-5)
    params, state, module = batchnorm_pair(torch, shape[1], momentum, 1e-5, 10)
    x, dy = rand(shape, 11) * 3 + 1, rand(shape, 12)
    y, new_state, grads, dx = ours(layer, params, state, x, dy)
    module.train()
    tx = tensor(torch, x, True)
    ty = module(tx)
    ty.backward(tensor(torch, dy))
    close(y, ty, rtol=1e-4, atol=1e-4)
    close(dx, tx.grad, rtol=1e-4, atol=1e-4)
    close(grads["gamma"], module.weight.grad, rtol=1e-4, atol=1e-4)
    close(grads["beta"], module.bias.grad, rtol=1e-4, atol=1e-4)
    close(new_state["running_mean"], module.running_mean, rtol=1e-5, atol=1e-5)
    close(new_state["running_var"], module.running_var, rtol=1e-5, atol=1e-5)


def test_batchnorm_inference(torch):
    layer = L.BatchNorm2D(momentum=0.9, eps=1e-3)
    params, state, module = batchnorm_pair(torch, 3, 0.9, 1e-3, 13)
    x = rand((2, 3, 4, 4), 14)
    y, _, _ = cn.apply(layer, params, state, x)
    module.eval()
    with torch.no_grad():
        close(y, module(tensor(torch, x)))


# --------------------------------------------------------------------------------------
# Dense, Flatten, activations, Dropout


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense(torch, use_bias):
    layer = L.Dense(5, use_bias=use_bias)
    params, state = cn.init(layer, (7,), rng=0)
    if use_bias:
        params["b"] = rand((5,), 17)
    x, dy = rand((4, 7), 15), rand((4, 5), 16)
    y, _, grads, dx = ours(layer, params, state, x, dy)
    module = torch.nn.Linear(7, 5, bias=use_bias)
    with torch.no_grad():
        module.weight.copy_(tensor(torch, params["W"].T))  # torch keeps W as (out, in)
        if use_bias:
            module.bias.copy_(tensor(torch, params["b"]))
    tx = tensor(torch, x, True)
    ty = module(tx)
    ty.backward(tensor(torch, dy))
    close(y, ty)
    close(dx, tx.grad)
    close(grads["W"], module.weight.grad.T)
    if use_bias:
        close(grads["b"], module.bias.grad)


def test_flatten(torch):
    x, dy = rand((2, 3, 4, 5), 18), rand((2, 60), 19)
    y, _, _, dx = ours(L.Flatten(), {}, {}, x, dy)
    tx = tensor(torch, x, True)
    ty = torch.flatten(tx, 1)
    ty.backward(tensor(torch, dy))
    close(y, ty)
    close(dx, tx.grad)


TORCH_ACTIVATIONS = {
    "relu": lambda t, F: F.relu(t),
    "leaky_relu": lambda t, F: F.leaky_relu(t, negative_slope=0.1),
    "sigmoid": lambda t, F: t.sigmoid(),
    "tanh": lambda t, F: t.tanh(),
    "softmax": lambda t, F: F.softmax(t, dim=-1),
    "gelu": lambda t, F: F.gelu(t, approximate="tanh"),
}


@pytest.mark.parametrize("name", sorted(L.ACTIVATIONS))
def test_activation(torch, name):
    assert set(TORCH_ACTIVATIONS) == set(L.ACTIVATIONS)
    layer = L.Activation(name, alpha=0.1)
    x, dy = rand((4, 3, 10), 20) * 3, rand((4, 3, 10), 21)
    x[0, 0, :3] = [-30.0, 30.0, 0.5]  # saturated and ordinary values
    y, _, _, dx = ours(layer, {}, {}, x, dy)
    tx = tensor(torch, x, True)
    ty = TORCH_ACTIVATIONS[name](tx, torch.nn.functional)
    ty.backward(tensor(torch, dy))
    close(y, ty)
    close(dx, tx.grad)


def test_dropout_with_a_shared_mask(torch):
    layer = L.Dropout(0.4)
    x, dy = rand((3, 4, 5, 6), 22), rand((3, 4, 5, 6), 23)
    y, _, _, dx = ours(layer, {}, {}, x, dy, seed=5)
    mask = (y != 0).astype("float32")  # x has no zeros: the mask our layer drew
    assert 0.5 < mask.mean() < 0.7
    tx = tensor(torch, x, True)
    # the same mask through torch: what F.dropout computes for the elements it keeps
    ty = tx * tensor(torch, mask) / (1 - 0.4)
    ty.backward(tensor(torch, dy))
    close(y, ty)
    close(dx, tx.grad)
    # and torch's own dropout scales the kept elements the same way
    dropped = torch.nn.functional.dropout(tensor(torch, x), p=0.4, training=True)
    kept = dropped != 0
    close(dropped[kept].numpy(), tensor(torch, x)[kept] / 0.6)


# --------------------------------------------------------------------------------------
# the whole model


def test_whole_model_loss_and_every_gradient(torch):
    net = L.Sequential(
        [
            L.Conv2D(8, (3, 3)),
            L.Activation("relu"),
            L.MaxPool2D((2, 2)),
            L.Conv2D(16, (3, 3)),
            L.Activation("relu"),
            L.MaxPool2D((2, 2)),
            L.Flatten(),
            L.Dense(64),
            L.Activation("relu"),
            L.Dense(10),
        ]
    )
    params, state = cn.init(net, (1, 28, 28), rng=0)
    rng = numpy.random.default_rng(24)
    params = cn.tree.map(lambda p: p + 0.05 * rng.standard_normal(p.shape, "float32"), params)
    x = rand((16, 1, 28, 28), 25)
    labels = rng.integers(0, 10, 16)
    logits, _, cache = cn.apply(net, params, state, x, training=True)
    loss, dlogits = losses.softmax_cross_entropy(logits, labels, xp=numpy)
    grads, dx = cn.grad(net, params, cache, dlogits)

    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(784, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )
    with torch.no_grad():
        for index in (0, 3):
            model[index].weight.copy_(tensor(torch, params[index]["W"]))
            model[index].bias.copy_(tensor(torch, params[index]["b"]))
        for index in (7, 9):
            model[index].weight.copy_(tensor(torch, params[index]["W"].T))
            model[index].bias.copy_(tensor(torch, params[index]["b"]))
    tx = tensor(torch, x, True)
    t_logits = model(tx)
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.tensor(labels))
    t_loss.backward()

    assert loss.dtype == numpy.float32
    assert float(loss) == pytest.approx(t_loss.item(), rel=1e-5)
    close(logits, t_logits, rtol=1e-4, atol=1e-5)
    close(dx, tx.grad, rtol=1e-3, atol=1e-6)
    for index in (0, 3):
        close(grads[index]["W"], model[index].weight.grad, rtol=1e-3, atol=1e-5)
        close(grads[index]["b"], model[index].bias.grad, rtol=1e-3, atol=1e-5)
    for index in (7, 9):
        close(grads[index]["W"], model[index].weight.grad.T, rtol=1e-3, atol=1e-5)
        close(grads[index]["b"], model[index].bias.grad, rtol=1e-3, atol=1e-5)
