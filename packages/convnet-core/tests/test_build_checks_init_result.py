"""What each layer's init returned is checked when the model is built: params and state made
of arrays. A None (or a number) where an array or a dict belongs is a TypeError naming the
layer, at build time, not a TypeError from numpy.isfinite at the end of fit's first epoch."""

import attrs
import numpy
import pytest
from convnet_core import Model
from convnet_core.layers import Dense, Sequential

X = numpy.random.default_rng(0).standard_normal((16, 4)).astype(numpy.float32)
Y = numpy.arange(16) % 2


@attrs.frozen
class Doubling:
    """y = 2x, with no parameters; init returns `params` and `state` as given."""

    params: object = attrs.field(factory=dict)
    state: object = attrs.field(factory=dict)

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        return self.params, self.state

    def apply(self, params, state, x, *, training, rng, xp):
        return 2 * x, state, None

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        return {}, 2 * dy


ADVICE = (
    "; a layer's params and state must be dicts (tuples, for combinators) of arrays, "
    "{} when it has none"
)


def test_a_state_of_none_is_refused_naming_the_layer(xp):
    model = Model([Doubling(state=None), Dense(2)], device=xp, seed=0)
    model.compile(loss="cce", optimizer="sgd")
    with pytest.raises(TypeError) as error:
        model.fit((X, Y), epochs=1, batch_size=8, verbose=False)  # builds the model
    message = str(error.value)  # from the layer protocol's check of init, or Model.build's
    assert "layer 0" in message and "Doubling(params={}, state=None)" in message
    assert "returned None" in message and "state" in message


def test_a_leaf_that_is_not_an_array_is_refused_with_its_place(xp):
    inner = Doubling(params={"scale": 2.0})
    model = Model([Dense(4), Sequential((inner,))], device=xp, seed=0)
    with pytest.raises(TypeError) as error:
        model.build((4,))
    assert str(error.value) == (
        f"Model.build: layer 1, {Sequential((inner,))!r}, init returned a float at "
        "'0/scale' of its params" + ADVICE
    )


def test_empty_params_and_state_are_fine(xp):
    model = Model([Doubling(), Dense(2)], device=xp, seed=0).compile(loss="cce", optimizer="sgd")
    model.fit((X, Y), epochs=1, batch_size=8, verbose=False)
    assert model.params[0] == {} and model.state[0] == {}
