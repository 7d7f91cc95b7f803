"""PyTorch state dicts: a converted model gives PyTorch's outputs, both ways.

Tests marked `parity` need torch (the parity nox session installs it); it is imported
inside them, so collecting this file works without torch.
"""

import convnet_io
import numpy
import pytest
from convnet_core import apply, init
from convnet_core import layers as L
from convnet_io_helpers import SHAPE, our_net, randomize


def torch_equivalent(layer, in_channels):
    """The torch module with the same computation and parameter names; (module, out channels)."""
    from torch import nn

    class TorchResidual(nn.Module):
        def __init__(self, body, shortcut):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    if isinstance(layer, L.Sequential):
        modules, channels = [], in_channels
        for child in layer.layers:
            module, channels = torch_equivalent(child, channels)
            modules.append(module)
        return nn.Sequential(*modules), channels
    if isinstance(layer, L.Residual):
        body, out = torch_equivalent(layer.body, in_channels)
        short = None if layer.shortcut is None else torch_equivalent(layer.shortcut, in_channels)[0]
        return TorchResidual(body, short), out
    if isinstance(layer, L.Conv2D):
        padding = 0 if layer.padding == "valid" else layer.padding  # "same" or ints
        conv = nn.Conv2d(
            in_channels,
            layer.filters,
            layer.kernel_size,
            stride=layer.stride,
            padding=padding,
            bias=layer.use_bias,
        )
        return conv, layer.filters
    if isinstance(layer, L.BatchNorm2D):
        return nn.BatchNorm2d(in_channels, eps=layer.eps, momentum=1 - layer.momentum), in_channels
    if isinstance(layer, L.Dense):
        return nn.LazyLinear(layer.units, bias=layer.use_bias), layer.units
    if isinstance(layer, L.MaxPool2D):
        return nn.MaxPool2d(layer.pool_size, stride=layer.strides), in_channels
    if isinstance(layer, L.AvgPool2D):
        return nn.AvgPool2d(layer.pool_size, stride=layer.strides), in_channels
    if isinstance(layer, L.Flatten):
        return nn.Flatten(), in_channels
    if isinstance(layer, L.Dropout):
        return nn.Dropout(layer.rate), in_channels
    if isinstance(layer, L.Activation):
        return {
            "relu": nn.ReLU(),
            "leaky_relu": nn.LeakyReLU(layer.alpha),
            "tanh": nn.Tanh(),
            "sigmoid": nn.Sigmoid(),
            "gelu": nn.GELU(approximate="tanh"),
            "softmax": nn.Softmax(dim=-1),
        }[layer.name], in_channels
    raise AssertionError(f"no torch equivalent for {layer!r}")  # pragma: no cover


def torch_model(net, shape):
    import torch

    module, _ = torch_equivalent(net, shape[0])
    module(torch.zeros((1, *shape)))  # materialises the lazy Linear layers
    return module.eval()


@pytest.mark.parity
def test_to_torch_gives_torchs_outputs():
    import torch

    net = our_net()
    params, state = randomize(*init(net, SHAPE, rng=0), seed=5)
    x = numpy.random.default_rng(6).normal(size=(4, *SHAPE)).astype("float32")
    module = torch_model(net, SHAPE)

    state_dict = convnet_io.to_torch_state_dict((net, params, state))
    module.load_state_dict(state_dict, strict=True)

    assert numpy.array_equal(state_dict["10.weight"].numpy(), params[10]["W"].T)
    assert numpy.array_equal(state_dict["3.shortcut.weight"].numpy(), params[3]["shortcut"]["W"])
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got, _, _ = apply(net, params, state, x)
    numpy.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parity
def test_from_torch_gives_torchs_outputs():
    import torch

    torch.manual_seed(0)
    net = our_net()
    module = torch_model(net, SHAPE)
    module.train()
    with torch.no_grad():  # move the BatchNorm running statistics away from 0 / 1
        for _ in range(3):
            module(torch.randn(8, *SHAPE) * 2 + 1)
    module.eval()
    x = numpy.random.default_rng(7).normal(size=(4, *SHAPE)).astype("float32")

    params, state = convnet_io.from_torch_state_dict(module.state_dict(), net, SHAPE)

    assert not numpy.allclose(state[1]["running_var"], 1.0)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got, _, _ = apply(net, params, state, x)
    numpy.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    again = convnet_io.to_torch_state_dict((net, params, state))
    for name, tensor in module.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert numpy.array_equal(again[name].numpy(), tensor.numpy()), name


@pytest.mark.parity
def test_to_torch_from_a_model(tmp_path):
    from convnet_core import Model

    model = Model([L.Conv2D(3, (3, 3)), L.Flatten(), L.Dense(2)], seed=1, device="cpu")
    model.build((1, 5, 5))
    state_dict = convnet_io.to_torch_state_dict(model)
    assert list(state_dict) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    params, state = convnet_io.from_torch_state_dict(state_dict, model)
    for ours, back in zip(model.params, params, strict=True):
        for key in ours:
            assert numpy.array_equal(ours[key], back[key])


# Without torch: the reverse direction accepts plain arrays, so its checks run everywhere.


def numpy_state_dict():
    rng = numpy.random.default_rng(0)
    return {
        "0.weight": rng.normal(size=(4, 1, 3, 3)),
        "0.bias": rng.normal(size=4),
        "1.weight": rng.normal(size=4),
        "1.bias": rng.normal(size=4),
        "1.running_mean": rng.normal(size=4),
        "1.running_var": rng.uniform(0.5, 2, 4),
        "1.num_batches_tracked": numpy.array(3),
        "3.weight": rng.normal(size=(2, 4 * 5 * 5)),
        "3.bias": rng.normal(size=2),
    }


NET = L.Sequential((L.Conv2D(4, (3, 3)), L.BatchNorm2D(), L.Flatten(), L.Dense(2)))


def test_from_state_dict_of_arrays():
    sd = numpy_state_dict()
    params, state = convnet_io.from_torch_state_dict(sd, NET, (1, 5, 5))
    assert params[3]["W"].shape == (100, 2) and params[3]["W"].dtype == numpy.float32
    assert numpy.array_equal(params[3]["W"], sd["3.weight"].T.astype("float32"))
    assert numpy.array_equal(state[1]["running_var"], sd["1.running_var"].astype("float32"))
    assert params[0]["W"].flags.c_contiguous and params[3]["W"].flags.c_contiguous


def test_from_state_dict_errors():
    sd = numpy_state_dict()
    with pytest.raises(ValueError, match="'3.bias' is missing"):
        convnet_io.from_torch_state_dict({k: v for k, v in sd.items() if k != "3.bias"}, NET)
    with pytest.raises(ValueError, match=r"no place in the network: \['9.weight'\]"):
        convnet_io.from_torch_state_dict({**sd, "9.weight": numpy.zeros(1)}, NET)
    with pytest.raises(ValueError, match="params/3/W has shape"):
        convnet_io.from_torch_state_dict({**sd, "3.weight": numpy.zeros((2, 99))}, NET, (1, 5, 5))
