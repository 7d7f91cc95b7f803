"""Optimizers: each update against an independent float64 reference written from the formulas,
purity, clipping, weight decay, the learning rate in the state, and configs."""

import math

import numpy
import pytest
from convnet_core import optim


def make_tree(xp, dtype="float64", seed=0):
    rng = numpy.random.default_rng(seed)
    params = (
        {
            "W": xp.asarray(rng.normal(size=(3, 4)).astype(dtype)),
            "b": xp.asarray(rng.normal(size=(4,)).astype(dtype)),
        },
        {},
        {"W": xp.asarray(rng.normal(size=(4, 2)).astype(dtype))},
    )
    return params


def grads_for(xp, step, dtype="float64"):
    return make_tree(xp, dtype, seed=100 + step)


def host(tree):
    from convnet_core import backend
    from convnet_core import tree as T

    return [numpy.asarray(leaf) for leaf in T.leaves(backend.to_host(tree))]


def reference(kind, p, grads, **h):
    """A plain per-leaf float64 implementation of each rule, looping over steps."""
    lr = h.get("lr")
    wd = h.get("weight_decay", 0.0)
    clip = h.get("clip_norm")
    p = [x.astype(numpy.float64).copy() for x in p]
    s1 = [numpy.zeros_like(x) for x in p]
    s2 = [numpy.zeros_like(x) for x in p]
    for t, g in enumerate(grads, start=1):
        g = [x.astype(numpy.float64) for x in g]
        if clip is not None:
            norm = math.sqrt(sum(float((x * x).sum()) for x in g))
            g = [x * min(1.0, clip / (norm + 1e-6)) for x in g]
        for i in range(len(p)):
            gi = g[i] + wd * p[i] if kind != "adamw" else g[i]
            if kind == "sgd":
                mu = h.get("momentum", 0.0)
                if mu:
                    s1[i] = mu * s1[i] + gi
                    d = gi + mu * s1[i] if h.get("nesterov") else s1[i]
                else:
                    d = gi
                p[i] = p[i] - lr * d
            elif kind in ("adam", "adamw"):
                b1, b2, eps = h.get("beta1", 0.9), h.get("beta2", 0.999), h.get("eps", 1e-8)
                if kind == "adamw":
                    p[i] = p[i] * (1 - lr * h["weight_decay"])
                s1[i] = b1 * s1[i] + (1 - b1) * gi
                s2[i] = b2 * s2[i] + (1 - b2) * gi * gi
                mhat = s1[i] / (1 - b1**t)
                vhat = s2[i] / (1 - b2**t)
                p[i] = p[i] - lr * mhat / (numpy.sqrt(vhat) + eps)
            elif kind == "rmsprop":
                rho, eps = h.get("decay", 0.9), h.get("eps", 1e-8)
                s2[i] = rho * s2[i] + (1 - rho) * gi * gi
                p[i] = p[i] - lr * gi / (numpy.sqrt(s2[i]) + eps)
    return p


CASES = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}),
    ("sgd", {"lr": 0.1, "weight_decay": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.1, "clip_norm": 0.5}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "weight_decay": 0.1, "clip_norm": 1.0}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "decay": 0.5, "weight_decay": 0.05, "clip_norm": 2.0}),
]


@pytest.mark.parametrize(("kind", "hyper"), CASES)
def test_update_matches_the_formulas(xp, kind, hyper):
    opt = optim.get(kind, **hyper)
    params = make_tree(xp)
    state = opt.init(params)
    all_grads = [grads_for(xp, step) for step in range(4)]
    for grads in all_grads:
        params, state = opt.update(params, grads, state)
    expected = reference(
        kind, host(make_tree(xp)), [host(g) for g in all_grads], **{"lr": opt.lr, **hyper}
    )
    for got, want in zip(host(params), expected, strict=True):
        numpy.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert int(state["step"]) == 4


def flat_on_host(tree):
    from convnet_core import backend
    from convnet_core import tree as T

    return {key: numpy.asarray(leaf) for key, leaf in T.flatten(backend.to_host(tree)).items()}


@pytest.mark.parametrize(("kind", "hyper"), CASES)
def test_update_if_takes_the_step_or_keeps_everything(xp, kind, hyper):
    opt = optim.get(kind, **hyper)
    params, state = make_tree(xp), opt.init(make_tree(xp))
    for step in range(2):  # moments and momentum that are not zero
        params, state = opt.update(params, grads_for(xp, step), state)
    grads = grads_for(xp, 2)
    taken = flat_on_host(opt.update(params, grads, state))
    kept = flat_on_host((params, state))
    overflowed = grads_for(xp, 2)
    overflowed[0]["W"][1, 2] = numpy.inf  # what a skipped step's gradients look like

    # a host boolean branches; a device one (on a GPU) is decided there
    for take in (True, xp.asarray(True)):
        got = flat_on_host(opt.update_if(take, params, grads, state))
        assert got.keys() == taken.keys()
        for key, value in taken.items():  # (a GPU may fuse a multiply-add differently)
            numpy.testing.assert_allclose(got[key], value, rtol=1e-12, atol=0, err_msg=key)
    for take in (False, xp.asarray(False)):
        with numpy.errstate(invalid="ignore"):  # clipping divides by an infinite norm
            got = flat_on_host(opt.update_if(take, params, overflowed, state))
        for key, value in kept.items():
            numpy.testing.assert_array_equal(got[key], value, err_msg=key)
        assert int(got["1/step"]) == 2  # a skipped step is not counted


def test_update_is_pure(xp):
    opt = optim.adam(lr=0.1, clip_norm=0.1, weight_decay=0.1)
    params = make_tree(xp)
    before = host(params)
    state = opt.init(params)
    grads = grads_for(xp, 0)
    grads_before = host(grads)
    new_params, new_state = opt.update(params, grads, state)
    for a, b in zip(host(params), before, strict=True):
        numpy.testing.assert_array_equal(a, b)
    for a, b in zip(host(grads), grads_before, strict=True):
        numpy.testing.assert_array_equal(a, b)
    assert int(state["step"]) == 0 and int(new_state["step"]) == 1
    assert float(numpy.abs(host(state["m"])[0]).max()) == 0.0


def test_clip_norm_bounds_the_global_norm(xp):
    grads = grads_for(xp, 0)
    norm = float(optim.global_norm(grads))
    expected = math.sqrt(sum(float((g**2).sum()) for g in host(grads)))
    assert norm == pytest.approx(expected, rel=1e-12)
    clipped = optim.clip_by_global_norm(grads, norm / 4)
    assert float(optim.global_norm(clipped)) == pytest.approx(norm / 4, rel=1e-5)
    unclipped = optim.clip_by_global_norm(grads, norm * 4)  # below the limit: unchanged
    for a, b in zip(host(unclipped), host(grads), strict=True):
        numpy.testing.assert_allclose(a, b, rtol=1e-15)


def test_float32_stays_float32(xp):
    params = make_tree(xp, "float32")
    for opt in (optim.sgd(0.1, momentum=0.9), optim.adam(), optim.adamw(), optim.rmsprop()):
        new, _ = opt.update(params, grads_for(xp, 0, "float32"), opt.init(params))
        assert {leaf.dtype for leaf in host(new)} == {numpy.dtype("float32")}


def test_adamw_decays_weights_without_gradient(xp):
    params = make_tree(xp)
    zero = tuple({k: xp.zeros_like(v) for k, v in layer.items()} for layer in params)
    opt = optim.adamw(lr=0.1, weight_decay=0.5)
    new, _ = opt.update(params, zero, opt.init(params))
    for got, want in zip(host(new), host(params), strict=True):
        numpy.testing.assert_allclose(got, want * (1 - 0.1 * 0.5), rtol=1e-12)
    # Adam's L2 decay goes through the moments instead: with zero gradient and m = 0 it
    # moves every weight by about lr against its sign on the first step.
    moved, _ = optim.adam(lr=0.1, weight_decay=0.5).update(params, zero, opt.init(params))
    for got, want in zip(host(moved), host(params), strict=True):
        numpy.testing.assert_allclose(got, want - 0.1 * numpy.sign(want), atol=1e-7)


def test_learning_rate_lives_in_the_state(xp):
    params = make_tree(xp)
    opt = optim.sgd(lr=0.1)
    state = opt.init(params)
    assert optim.get_lr(state) == pytest.approx(0.1)
    state = optim.set_lr(state, 0.25)
    assert optim.get_lr(state) == 0.25
    grads = grads_for(xp, 0)
    new, _ = opt.update(params, grads, state)
    for p, g, n in zip(host(params), host(grads), host(new), strict=True):
        numpy.testing.assert_allclose(n, p - 0.25 * g, rtol=1e-12)
    with pytest.raises(ValueError, match=">= 0"):
        optim.set_lr(state, -1.0)


@pytest.mark.parametrize(
    "opt",
    [
        optim.sgd(0.2, momentum=0.5, nesterov=True, weight_decay=1e-3, clip_norm=2.0),
        optim.adam(3e-4, beta1=0.8),
        optim.adamw(1e-3, weight_decay=0.2),
        optim.rmsprop(0.01, 0.7),
    ],
)
def test_config_round_trip(opt):
    import json

    config = json.loads(json.dumps(optim.to_config(opt)))
    assert optim.from_config(config) == opt
    assert config["name"] == opt.name


def test_bad_options_are_clear():
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'"):
        optim.get("adagrad")
    with pytest.raises(ValueError, match="does not take momentum"):
        optim.get("adam", momentum=0.9)
    with pytest.raises(ValueError, match="nesterov"):
        optim.sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta1"):
        optim.adam(beta1=1.0)
    with pytest.raises(ValueError, match="clip_norm"):
        optim.sgd(0.1, clip_norm=0.0)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        optim.sgd(-0.1)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_a_scalar_parameter_is_updated_like_a_one_element_vector(xp, name):
    scalar = {"s": xp.asarray(2.0, dtype="float32")}  # shape ()
    vector = {"s": xp.asarray([2.0], dtype="float32")}  # shape (1,)
    opt = optim.get(name, lr=0.1, **({"momentum": 0.9} if name == "sgd" else {}))
    state_s, state_v = opt.init(scalar), opt.init(vector)
    for step in range(3):
        grad = float(step) - 0.5
        scalar, state_s = opt.update(scalar, {"s": xp.asarray(grad, dtype="float32")}, state_s)
        vector, state_v = opt.update(vector, {"s": xp.asarray([grad], dtype="float32")}, state_v)
    assert scalar["s"].shape == ()
    assert float(scalar["s"]) == float(vector["s"][0])


NOT_A_RATE = "set_lr: the learning rate must be a real number >= 0, not "
BAD_RATE = "set_lr: the learning rate must be >= 0, got "


@pytest.mark.parametrize(
    ("lr", "error", "words"),
    [
        (None, TypeError, NOT_A_RATE + "None"),
        ("0.1", TypeError, NOT_A_RATE + "'0.1'"),
        (True, TypeError, NOT_A_RATE + "True"),
        (numpy.asarray([0.1]), TypeError, NOT_A_RATE + "an array of shape (1,) and dtype float64"),
        (numpy.asarray(1j), TypeError, NOT_A_RATE + "an array of shape () and dtype complex128"),
        (numpy.asarray(-0.5), ValueError, BAD_RATE + "-0.5"),  # a NumPy 0-d array is read
        (numpy.float32(numpy.nan), ValueError, BAD_RATE + "nan"),
        (-1, ValueError, BAD_RATE + "-1"),
    ],
)
def test_set_lr_refuses_what_is_not_a_learning_rate(xp, lr, error, words):
    state = optim.sgd(lr=0.1).init(make_tree(xp))
    with pytest.raises(error) as raised:
        optim.set_lr(state, lr)
    assert str(raised.value) == words


def test_model_lr_refuses_none_and_keeps_its_rate(xp):
    from convnet_core import Model
    from convnet_core.layers import Dense

    model = Model([Dense(2)], device=xp, seed=0).compile(optimizer="adam", lr=0.1)
    model.build((3,))
    with pytest.raises(TypeError, match=f"^{NOT_A_RATE}None$"):
        model.lr = None
    assert model.lr == pytest.approx(0.1)


def test_set_lr_takes_numbers_and_0d_arrays(xp):
    state = optim.sgd(lr=0.1).init(make_tree(xp))
    for lr in (0, 0.25, numpy.float32(0.5), numpy.int64(2), numpy.asarray(0.75), xp.asarray(1.5)):
        new = optim.set_lr(state, lr)
        assert new["lr"].dtype == numpy.float64 and new["lr"].shape == ()
        assert optim.get_lr(new) == float(lr)


def bigger_tree(xp):
    """make_tree with one more layer: a model the state of which is not make_tree's."""
    return (*make_tree(xp), {"W": xp.asarray(numpy.ones((2, 2)))})


def wider_tree(xp):
    """make_tree with a first layer of 5 inputs instead of 3."""
    params = make_tree(xp)
    return ({**params[0], "W": xp.asarray(numpy.ones((5, 4)))}, *params[1:])


STATE_FOR_OTHER_PARAMS = [
    (
        bigger_tree,
        "the optimizer state does not fit the parameters: the values in slot 'm' are a "
        "tuple of 4 but the parameters a tuple of 3",
    ),
    (
        wider_tree,
        "the optimizer state does not fit the parameters: the value in slot 'm' of "
        "parameter '0/W' has shape (5, 4) but the parameter has shape (3, 4)",
    ),
]


@pytest.mark.parametrize(("other", "words"), STATE_FOR_OTHER_PARAMS)
def test_update_refuses_the_state_of_another_model(xp, other, words):
    opt = optim.adam(lr=0.1)
    params = make_tree(xp)
    with pytest.raises(ValueError) as error:
        opt.update(params, grads_for(xp, 0), opt.init(other(xp)))
    assert str(error.value) == f"adam.update: {words}"


def test_update_names_a_slot_of_another_dtype(xp):
    opt = optim.rmsprop()
    params = make_tree(xp, "float32")
    state = opt.init(make_tree(xp, "float64"))
    with pytest.raises(ValueError) as error:
        opt.update(params, grads_for(xp, 0, "float32"), state)
    assert str(error.value) == (
        "rmsprop.update: the optimizer state does not fit the parameters: the value in slot "
        "'v' of parameter '0/W' has dtype float64 but the parameter has dtype float32"
    )


@pytest.mark.parametrize(
    ("opt", "made_by", "words"),
    [
        (
            optim.adam(),
            optim.sgd(momentum=0.9),
            "has no slot 'm': it holds lr, step, momentum, where adam keeps lr, step, m, v",
        ),
        (
            optim.sgd(momentum=0.9),
            optim.rmsprop(),
            "has no slot 'momentum': it holds lr, step, v, where sgd keeps lr, step, momentum",
        ),
        (
            optim.rmsprop(),
            optim.adam(),
            "has a slot 'm', which rmsprop does not keep: it holds lr, step, m, v, where "
            "rmsprop keeps lr, step, v",
        ),
        (
            optim.sgd(),
            optim.sgd(momentum=0.9),
            "has a slot 'momentum', which sgd does not keep: it holds lr, step, momentum, "
            "where sgd keeps lr, step",
        ),
    ],
)
def test_update_refuses_the_state_of_another_optimizer(xp, opt, made_by, words):
    params = make_tree(xp)
    with pytest.raises(ValueError) as error:
        opt.update(params, grads_for(xp, 0), made_by.init(params))
    assert str(error.value) == (
        f"{opt.name}.update: the optimizer state {words} (is it another optimizer's? "
        "init(params) makes one for this optimizer)"
    )


def test_update_if_checks_the_state_too(xp):
    opt = optim.adam()
    params = make_tree(xp)
    state = opt.init(params)
    del state["step"]
    with pytest.raises(ValueError) as error:
        opt.update_if(xp.asarray(True), params, grads_for(xp, 0), state)
    assert str(error.value) == (
        "adam.update: the optimizer state has no 'step': it holds lr, m, v, where adam keeps "
        "lr, step, m, v (is it another optimizer's? init(params) makes one for this optimizer)"
    )


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize(
    ("param_dtype", "grad_dtype"), [("float32", "float64"), ("float64", "float32")]
)
def test_update_refuses_gradients_of_another_dtype(xp, name, param_dtype, grad_dtype):
    # float64 inputs in a custom loop give float64 gradients for float32 parameters: the
    # step would have turned the parameters (and some slots) into float64
    opt = optim.get(name, **({"momentum": 0.9} if name == "sgd" else {}))
    params = make_tree(xp, param_dtype)
    state = opt.init(params)
    for take in (None, True, xp.asarray(True)):
        with pytest.raises(ValueError) as error:
            if take is None:
                opt.update(params, grads_for(xp, 0, grad_dtype), state)
            else:
                opt.update_if(take, params, grads_for(xp, 0, grad_dtype), state)
        assert str(error.value) == (
            f"{name}.update: the gradient of parameter '0/W' has dtype {grad_dtype} but the "
            f"parameter has dtype {param_dtype}"
        )


@pytest.mark.parametrize("grads", [{}, ({}, {}), [], ({}, [], {"body": ()})])
def test_the_global_norm_of_a_tree_without_leaves_is_zero(grads):
    norm = optim.global_norm(grads)
    assert norm.shape == () and float(norm) == 0.0
    assert optim.clip_by_global_norm(grads, 1.0) is grads
