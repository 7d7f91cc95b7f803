"""check_grad refuses a layer's malformed gradients with the words fit uses, naming the
layer, after "check_grad:"."""

from __future__ import annotations

import attrs
import convnet_core as cn
import numpy
import pytest
from convnet_core import layers as L
from convnet_core.layers.base import ShapeError


@attrs.frozen
class BadScale:
    """y = s * x with s of shape (1,); its grad makes the mistake `mistake` names."""

    mistake: str = ""

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        return {"s": xp.ones((1,), dtype)}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        return params["s"] * x, state, (x if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        ds = (dy * cache).sum().reshape(1)
        dx = params["s"] * dy
        if self.mistake == "bare":
            return ds, dx
        if self.mistake == "scalar":
            return {"s": ds[0]}, dx
        if self.mistake == "dx":
            return {"s": ds}, dx[:, :1]
        if self.mistake == "no-dx":
            return {"s": ds}, None
        if self.mistake == "one":
            return ({"s": ds},)
        return {"s": ds}, dx


def _check(layer):
    params, state = cn.init(layer, (3,), rng=0, dtype="float64")
    x = numpy.random.default_rng(1).standard_normal((2, 3))
    return cn.check_grad(layer, params, state, x)


@pytest.mark.parametrize(
    ("mistake", "words"),
    [
        ("bare", "the gradients are an array of shape (1,) but the parameters are a dict"),
        ("scalar", "the gradient of parameter 's' has shape () but the parameter has shape (1,)"),
    ],
)
def test_gradients_unlike_the_params_are_told_as_fit_tells_them(mistake, words):
    with pytest.raises(ShapeError) as caught:
        _check(BadScale(mistake))
    assert str(caught.value) == f"check_grad: BadScale(mistake={mistake!r}).grad: {words}"


@pytest.mark.parametrize(("mistake", "shown"), [("dx", (2, 1)), ("no-dx", None)])
def test_an_input_gradient_unlike_x_names_the_layer(mistake, shown):
    with pytest.raises(ShapeError) as caught:
        _check(BadScale(mistake))
    assert str(caught.value) == (
        f"check_grad: BadScale(mistake={mistake!r}).grad returned dx of shape {shown} for an "
        "input of shape (2, 3); dx must be shaped like the input"
    )


def test_a_grad_returning_one_value_names_the_layer():
    with pytest.raises(TypeError) as caught:
        _check(BadScale("one"))
    assert str(caught.value) == (
        "check_grad: BadScale(mistake='one').grad must return a tuple (dparams, dx) but "
        "returned a tuple of 1"
    )


def test_in_a_sequential_the_child_is_named():
    with pytest.raises(ShapeError, match=r"^check_grad: layer 1 of Sequential: BadScale\("):
        _check(L.Sequential([L.Dense(3), BadScale("scalar")]))


def test_a_good_layer_still_passes():
    report = _check(L.Sequential([L.Dense(3), BadScale()]))
    assert report.ok and set(report.errors) == {"0/W", "0/b", "1/s", "input"}, str(report)
