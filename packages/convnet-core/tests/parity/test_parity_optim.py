"""Optimizers against torch.optim: several steps of each configuration give the same
parameters (float64, so the comparison is tight)."""

import numpy
import pytest
from convnet_core import optim
from convnet_core import tree as T

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


SHAPES = {"0/W": (5, 3), "0/b": (3,), "2/W": (3, 2, 2, 2)}


def initial_params(seed=0):
    rng = numpy.random.default_rng(seed)
    return (
        {"W": rng.normal(size=SHAPES["0/W"]), "b": rng.normal(size=SHAPES["0/b"])},
        {},
        {"W": rng.normal(size=SHAPES["2/W"])},
    )


def gradient_sequence(steps, scale):
    rng = numpy.random.default_rng(1)
    return [
        {key: scale * rng.normal(size=shape) for key, shape in SHAPES.items()} for _ in range(steps)
    ]


def torch_optimizer(torch, kind, tensors, h):
    if kind == "sgd":
        return torch.optim.SGD(
            tensors,
            lr=h["lr"],
            momentum=h.get("momentum", 0.0),
            nesterov=h.get("nesterov", False),
            weight_decay=h.get("weight_decay", 0.0),
        )
    if kind == "adam":
        return torch.optim.Adam(
            tensors,
            lr=h["lr"],
            betas=(h.get("beta1", 0.9), h.get("beta2", 0.999)),
            eps=h.get("eps", 1e-8),
            weight_decay=h.get("weight_decay", 0.0),
        )
    if kind == "adamw":
        return torch.optim.AdamW(tensors, lr=h["lr"], weight_decay=h["weight_decay"])
    return torch.optim.RMSprop(
        tensors,
        lr=h["lr"],
        alpha=h.get("decay", 0.9),
        eps=h.get("eps", 1e-8),
        weight_decay=h.get("weight_decay", 0.0),
    )


CONFIGS = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "clip_norm": 1.0}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6, "weight_decay": 0.1}),
    ("adam", {"lr": 0.01, "clip_norm": 0.5}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1, "clip_norm": 0.5}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "decay": 0.8, "weight_decay": 0.05, "clip_norm": 2.0}),
]


@pytest.mark.parametrize(("kind", "hyper"), CONFIGS)
@pytest.mark.parametrize("grad_scale", [0.1, 10.0])
def test_matches_torch_optim(torch, kind, hyper, grad_scale):
    steps = 6
    ours = optim.get(kind, **hyper)
    params = initial_params()
    state = ours.init(params)
    flat = T.flatten(params)
    tensors = {key: torch.tensor(value, requires_grad=True) for key, value in flat.items()}
    theirs = torch_optimizer(torch, kind, list(tensors.values()), hyper)
    for grads_flat in gradient_sequence(steps, grad_scale):
        params, state = ours.update(params, T.unflatten(params, grads_flat), state)
        for key, tensor in tensors.items():
            tensor.grad = torch.tensor(grads_flat[key])
        if "clip_norm" in hyper:
            torch.nn.utils.clip_grad_norm_(list(tensors.values()), hyper["clip_norm"])
        theirs.step()
    for key, value in T.flatten(params).items():
        numpy.testing.assert_allclose(
            value,
            tensors[key].detach().numpy(),
            rtol=1e-10,
            atol=1e-12,
            err_msg=f"{kind} {hyper} {key}",
        )


def test_learning_rate_change_matches_torch(torch):
    """Changing the lr mid-run (set_lr) equals editing torch's param_groups."""
    ours = optim.sgd(lr=0.1, momentum=0.9)
    params = initial_params()
    state = ours.init(params)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in T.flatten(params).items()}
    theirs = torch.optim.SGD(list(tensors.values()), lr=0.1, momentum=0.9)
    for step, grads_flat in enumerate(gradient_sequence(6, 1.0)):
        if step == 3:
            state = optim.set_lr(state, 0.02)
            theirs.param_groups[0]["lr"] = 0.02
        params, state = ours.update(params, T.unflatten(params, grads_flat), state)
        for key, tensor in tensors.items():
            tensor.grad = torch.tensor(grads_flat[key])
        theirs.step()
    for key, value in T.flatten(params).items():
        numpy.testing.assert_allclose(value, tensors[key].detach().numpy(), rtol=1e-10)
