"""The checks where layers meet: a layer that breaks the protocol (a dy of another dtype
than its output, y of another shape than its output_shape, a changed state, a return
value of the wrong form) is an error naming that layer and both values."""

from __future__ import annotations

import attrs
import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L
from convnet_core.layers.base import ShapeError


def _batch(xp, shape, dtype="float32", seed=0):
    return xp.asarray(numpy.random.default_rng(seed).standard_normal(shape).astype(dtype))


# -- dy in another dtype than the output -------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (L.Activation("relu"), (2, 3, 4, 4)),
        (L.BatchNorm2D(), (2, 3, 4, 4)),
        (L.Dense(5), (2, 3)),
    ],
)
def test_dy_of_another_dtype_than_the_output_is_refused(xp, layer, shape):
    params, state = cn.init(layer, shape[1:], rng=0, xp=xp)
    y, _, cache = cn.apply(layer, params, state, _batch(xp, shape), training=True, xp=xp)
    dy = xp.ones(y.shape, dtype="float64")
    with pytest.raises(ShapeError) as caught:
        cn.grad(layer, params, cache, dy, xp=xp)
    assert str(caught.value) == (
        f"{layer!r}.grad expected dy of dtype float32 (the output's) but got float64; "
        "cast it with dy.astype('float32')"
    )


def test_in_a_sequential_the_layer_given_the_wrong_dy_is_named(xp):
    net = L.Sequential([L.Dense(4), L.Activation("relu"), L.Dense(2)])
    params, state = cn.init(net, (3,), rng=0, xp=xp)
    y, _, cache = cn.apply(net, params, state, _batch(xp, (2, 3)), training=True, xp=xp)
    with pytest.raises(ShapeError, match=r"^layer 2 of Sequential: Dense\(units=2.*\.grad "):
        cn.grad(net, params, cache, xp.ones(y.shape, dtype="float16"), xp=xp)


def test_dy_in_the_output_dtype_passes_in_every_dtype(xp):
    net = L.Sequential([L.Dense(4), L.Activation("relu"), L.Dense(2)])
    for dtype in ("float16", "float32", "float64"):
        params, state = cn.init(net, (3,), rng=0, xp=xp, dtype=dtype)
        x = _batch(xp, (2, 3), dtype)
        y, _, cache = cn.apply(net, params, state, x, training=True, xp=xp)
        _, dx = cn.grad(net, params, cache, xp.ones_like(y), xp=xp)
        assert dx.dtype == dtype


def test_an_integer_batch_takes_floating_gradients(xp):
    net = L.Sequential([L.Flatten(), L.Dense(2)])
    params, state = cn.init(net, (2, 2), rng=0, xp=xp)
    x = xp.asarray(numpy.arange(8, dtype="uint8").reshape(2, 2, 2))
    y, _, cache = cn.apply(net, params, state, x, training=True, xp=xp)
    grads, _ = cn.grad(net, params, cache, xp.ones_like(y), xp=xp, input_grad=False)
    assert grads[1]["W"].dtype == "float32"


@attrs.frozen
class WideGrad:
    """y = x, but a grad that returns dx in float64: the layer is named, not the one
    before it, whose dy it becomes."""

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        return {}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        return x, state, (() if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        return {}, (dy.astype("float64") if input_grad else None)


def test_dx_of_another_dtype_than_the_input_names_the_layer_that_returned_it(xp):
    net = L.Sequential([L.Dense(3), WideGrad()])
    params, state = cn.init(net, (2,), rng=0, xp=xp)
    y, _, cache = cn.apply(net, params, state, _batch(xp, (4, 2)), training=True, xp=xp)
    with pytest.raises(ShapeError) as caught:
        cn.grad(net, params, cache, xp.ones_like(y), xp=xp)
    assert str(caught.value) == (
        "layer 1 of Sequential: WideGrad().grad returned dx of dtype float64 for an input of "
        "dtype float32; dx must have the input's dtype"
    )


# -- y of another shape than output_shape says -------------------------------------------


@attrs.frozen
class Doubling:
    """apply returns (N, 2F) but output_shape keeps (F,) (the mistake), or says (F + extra,)
    while apply keeps (N, F)."""

    extra: int = 0

    def output_shape(self, input_shape):
        return (input_shape[0] + self.extra,)

    def init(self, input_shape, rng, *, xp, dtype):
        return {}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        y = x if self.extra else xp.concatenate([x, x], axis=1)
        return y, state, (() if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        return {}, (dy if input_grad else None)


def test_the_last_layer_of_a_network_is_named_when_y_disagrees_with_output_shape(xp):
    net = L.Sequential([L.Dense(3), Doubling()])
    params, state = cn.init(net, (4,), rng=0, xp=xp)
    for training in (False, True):
        with pytest.raises(ShapeError) as caught:
            cn.apply(net, params, state, _batch(xp, (5, 4)), training=training, xp=xp)
        assert str(caught.value) == (
            "layer 1 of Sequential: Doubling(extra=0).apply returned y of shape (5, 6) for an "
            "input of shape (5, 3), but its output_shape((3,)) is (3,)"
        )


def test_a_layer_in_the_middle_is_named_rather_than_the_next_one(xp):
    for wrong, message in [
        (
            Doubling(),
            "returned y of shape (5, 6) for an input of shape (5, 3), but its "
            "output_shape((3,)) is (3,)",
        ),
        (
            Doubling(extra=1),
            "returned y of shape (5, 3) for an input of shape (5, 3), but "
            "its output_shape((3,)) is (4,)",
        ),
    ]:
        net = L.Sequential([L.Dense(3), wrong, L.Dense(2)])
        params, state = cn.init(net, (4,), rng=0, xp=xp)
        with pytest.raises(ShapeError) as caught:
            cn.apply(net, params, state, _batch(xp, (5, 4)), training=True, xp=xp)
        assert str(caught.value) == f"layer 1 of Sequential: {wrong!r}.apply {message}"


def test_a_single_layer_is_checked_by_apply(xp):
    params, state = cn.init(Doubling(), (3,), rng=0, xp=xp)
    with pytest.raises(ShapeError, match=r"^Doubling\(extra=0\)\.apply returned y of shape"):
        cn.apply(Doubling(), params, state, _batch(xp, (2, 3)), xp=xp)


def test_an_error_of_the_next_layer_is_its_own_when_the_layer_before_agrees(xp):
    net = L.Sequential([L.Dense(3), L.Dense(2)])
    params, state = cn.init(net, (4,), rng=0, xp=xp)
    params = (params[0], {"W": params[1]["W"][:2], "b": params[1]["b"]})
    with pytest.raises(ShapeError, match=r"^layer 1 of Sequential: Dense\(units=2"):
        cn.apply(net, params, state, _batch(xp, (5, 4)), xp=xp)


# -- the new state against the old -------------------------------------------------------


@attrs.frozen
class RunningMean:
    """y = x; state {"mean": (F,), "count": ()} updated when training, with one of the
    mistakes `mistake` names."""

    mistake: str = ""

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        return {}, {"mean": xp.zeros(input_shape, dtype), "count": xp.zeros((), dtype)}

    def apply(self, params, state, x, *, training, rng, xp):
        if not training:
            return x, state, None
        mean = x.mean(axis=0, keepdims=self.mistake == "keepdims")
        new = {"mean": mean.astype(state["mean"].dtype), "count": state["count"] + 1}
        if self.mistake == "float64":
            new["mean"] = mean.astype("float64")
        if self.mistake == "missing":
            del new["count"]
        return x, new, ()

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        return {}, (dy if input_grad else None)


@pytest.mark.parametrize(
    ("mistake", "words"),
    [
        ("keepdims", "new state entry 'mean' of shape (1, 3) but the state entry has shape (3,)"),
        (
            "float64",
            "new state entry 'mean' of dtype float64 but the state entry has dtype float32",
        ),
        ("missing", "a new state with keys ['mean'] but the state has ['count', 'mean']"),
    ],
)
def test_a_changed_state_names_the_layer_at_its_first_training_step(xp, mistake, words):
    net = L.Sequential([L.Dense(3), RunningMean(mistake), L.Dense(2)])
    params, state = cn.init(net, (4,), rng=0, xp=xp)
    x = _batch(xp, (5, 4))
    with pytest.raises(ShapeError) as caught:
        cn.apply(net, params, state, x, training=True, xp=xp)
    assert (
        str(caught.value)
        == f"layer 1 of Sequential: RunningMean(mistake={mistake!r}).apply returned {words}"
    )
    cn.apply(net, params, state, x, xp=xp)  # inference keeps the state: nothing to check


def test_a_state_kept_in_shape_and_dtype_passes(xp):
    net = L.Sequential([L.Dense(3), RunningMean()])
    params, state = cn.init(net, (4,), rng=0, xp=xp)
    _, new_state, _ = cn.apply(net, params, state, _batch(xp, (5, 4)), training=True, xp=xp)
    assert float(new_state[1]["count"]) == 1.0


@attrs.frozen
class StateInDtype(RunningMean):
    """A RunningMean that returns its new state in `dtype` ("x": x's dtype, float16 under
    mixed precision)."""

    dtype: str = "x"

    def apply(self, params, state, x, *, training, rng, xp):
        y, new, cache = RunningMean.apply(self, params, state, x, training=training, rng=rng, xp=xp)
        if training:
            dtype = x.dtype if self.dtype == "x" else self.dtype
            new = {key: value.astype(dtype) for key, value in new.items()}
        return y, new, cache


def _mixed_precision_step(layer, xp):
    """One scaled forward and backward pass of Dense(3), `layer`, Dense(2) in float16:
    (loss, logits, new_state, grads, finite)."""
    from convnet_core import losses, precision

    net = L.Sequential([L.Dense(3), layer, L.Dense(2)])
    params, state = cn.init(net, (4,), rng=0, xp=xp)
    labels = xp.asarray(numpy.array([0, 1, 1, 0, 1]))
    return precision.scaled_forward_backward(
        net,
        params,
        state,
        _batch(xp, (5, 4)),
        labels,
        precision.DynamicLossScaler(),
        loss_fn=losses.softmax_cross_entropy,
        xp=xp,
    )


@pytest.mark.filterwarnings("ignore::convnet_core.precision.MixedPrecisionOnNumPyWarning")
def test_under_mixed_precision_the_state_stays_in_its_own_dtype(xp):
    assert _mixed_precision_step(RunningMean(), xp)[2][1]["mean"].dtype == "float32"
    # computed from the float16 x in its dtype: taken, and cast back to float32
    assert _mixed_precision_step(StateInDtype(), xp)[2][1]["mean"].dtype == "float32"
    with pytest.raises(ShapeError) as caught:
        _mixed_precision_step(StateInDtype(dtype="float64"), xp)
    assert str(caught.value) == (
        "layer 1 of Sequential: StateInDtype(mistake='', dtype='float64').apply returned new "
        "state entry 'mean' of dtype float64 but the state entry has dtype float32"
    )


def test_a_combinators_state_is_checked_once_by_its_children(xp, monkeypatch):
    """Sequential and Residual hold their children's states, each checked by the child's
    own apply: the check does not run again on the whole at every level."""
    from convnet_core.layers import base

    checked = []
    real = base.grad_mismatch
    monkeypatch.setattr(
        base, "grad_mismatch", lambda a, b, **k: checked.append(a) or real(a, b, **k)
    )
    net = L.Sequential([L.Residual(L.Sequential([L.Dense(4), RunningMean()])), L.Dense(2)])
    params, state = cn.init(net, (4,), rng=0, xp=xp)
    cn.apply(net, params, state, _batch(xp, (5, 4)), training=True, xp=xp)
    assert {"mean", "count"} in [set(tree) for tree in checked]  # RunningMean's own state
    combinators = [t for t in checked if isinstance(t, tuple) or "body" in t]
    assert combinators == []


# -- what apply, grad and init return ----------------------------------------------------


@attrs.frozen
class Returns:
    """y = x, with `apply`, `grad` or `init` returning the wrong form, as `wrong` says."""

    wrong: str = ""

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        if self.wrong == "init-pair":
            return {}
        return {}, (None if self.wrong == "init-state" else {})

    def apply(self, params, state, x, *, training, rng, xp):
        if self.wrong == "apply":
            return x, state
        return x, state, (() if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        if self.wrong == "grad":
            return {}
        return {}, (dy if input_grad else None)


def test_apply_not_returning_three_values_names_the_layer(xp):
    net = L.Sequential([L.Dense(3), Returns("apply")])
    params, state = cn.init(net, (2,), rng=0, xp=xp)
    with pytest.raises(TypeError) as caught:
        cn.apply(net, params, state, _batch(xp, (4, 2)), xp=xp)
    assert str(caught.value) == (
        "layer 1 of Sequential: Returns(wrong='apply').apply must return a tuple "
        "(y, new_state, cache) but returned a tuple of 2"
    )


def test_grad_not_returning_two_values_names_the_layer(xp):
    net = L.Sequential([L.Dense(3), Returns("grad")])
    params, state = cn.init(net, (2,), rng=0, xp=xp)
    y, _, cache = cn.apply(net, params, state, _batch(xp, (4, 2)), training=True, xp=xp)
    with pytest.raises(TypeError) as caught:
        cn.grad(net, params, cache, xp.ones_like(y), xp=xp)
    assert str(caught.value) == (
        "layer 1 of Sequential: Returns(wrong='grad').grad must return a tuple (dparams, dx) "
        "but returned a dict"
    )


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (
            "init-pair",
            "Returns(wrong='init-pair').init must return a tuple (params, state) but "
            "returned a dict",
        ),
        (
            "init-state",
            "Returns(wrong='init-state').init must return state as a dict (or a "
            "tuple, for a combinator) but returned None; a layer without state returns {}",
        ),
    ],
)
def test_init_not_returning_params_and_state_names_the_layer(xp, wrong, message):
    with pytest.raises(TypeError) as caught:
        cn.init(Returns(wrong), (2,), rng=0, xp=xp)
    assert str(caught.value) == message
    with pytest.raises(TypeError) as caught:
        cn.init(L.Residual(L.Sequential([L.Dense(2), Returns(wrong)])), (2,), rng=0, xp=xp)
    assert str(caught.value) == f"body of Residual: layer 1 of Sequential: {message}"


# -- the path of an error inside a Residual ----------------------------------------------


def test_errors_inside_a_residual_say_which_path(xp):
    block = L.Residual(L.Sequential([L.Dense(3), WideGrad()]), shortcut=WideGrad())
    net = L.Sequential([L.Dense(3), block])
    params, state = cn.init(net, (2,), rng=0, xp=xp)
    y, _, cache = cn.apply(net, params, state, _batch(xp, (4, 2)), training=True, xp=xp)
    with pytest.raises(ShapeError) as caught:
        cn.grad(net, params, cache, xp.ones_like(y), xp=xp)
    assert str(caught.value) == (
        "layer 1 of Sequential: body of Residual: layer 1 of Sequential: WideGrad().grad "
        "returned dx of dtype float64 for an input of dtype float32; dx must have the input's "
        "dtype"
    )
    block = L.Residual(L.Dense(3), shortcut=WideGrad())
    params, state = cn.init(block, (3,), rng=0, xp=xp)
    y, _, cache = cn.apply(block, params, state, _batch(xp, (4, 3)), training=True, xp=xp)
    with pytest.raises(ShapeError, match=r"^shortcut of Residual: WideGrad\(\)\.grad returned"):
        cn.grad(block, params, cache, xp.ones_like(y), xp=xp)


def test_a_residual_path_whose_y_disagrees_with_its_output_shape_is_named(xp):
    block = L.Residual(L.Dense(3), shortcut=Doubling())
    params, state = cn.init(block, (3,), rng=0, xp=xp)
    with pytest.raises(ShapeError) as caught:
        cn.apply(block, params, state, _batch(xp, (4, 3)), xp=xp)
    assert str(caught.value) == (
        "shortcut of Residual: Doubling(extra=0).apply returned y of shape (4, 6) for an input "
        "of shape (4, 3), but its output_shape((3,)) is (3,)"
    )
    with pytest.raises(TypeError, match=r"^body of Residual: Returns\(wrong='apply'\)\.apply"):
        block = L.Residual(Returns("apply"))
        params, state = cn.init(block, (3,), rng=0, xp=xp)
        cn.apply(block, params, state, _batch(xp, (4, 3)), xp=xp)
