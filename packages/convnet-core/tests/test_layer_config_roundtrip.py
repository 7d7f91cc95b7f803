"""A layer's saved config (layer_to_config) rebuilds an equal layer (layer_from_config),
or saving refuses it up front, naming the layer's class and the field."""

from __future__ import annotations

import json

import attrs
import pytest
from convnet_core import layers as L
from convnet_core.layers.base import layer_from_config, layer_to_config, register_layer


class _Identity:
    """y = x: the four protocol methods, for layers that differ only in their fields."""

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        return {}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        return x, state, (() if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        return {}, (dy if input_grad else None)


@register_layer(name="test_roundtrip.Private")
@attrs.frozen
class Private(_Identity):
    _size: int = 3  # __init__ takes `size`


@register_layer(name="test_roundtrip.Derived")
@attrs.frozen
class Derived(_Identity):
    k: int = 1
    twice: int = attrs.field(init=False)

    @twice.default
    def _twice(self):
        return 2 * self.k


@register_layer(name="test_roundtrip.Doubled")
@attrs.frozen
class Doubled(_Identity):
    width: int = attrs.field(default=1, converter=lambda value: 2 * value)


@register_layer(name="test_roundtrip.Listed")
@attrs.frozen
class Listed(_Identity):
    sizes: object = (1, 2)


def _through_json(layer):
    return layer_from_config(json.loads(json.dumps(layer_to_config(layer))))


def test_a_private_field_is_saved_under_its_init_argument():
    layer = Private(size=5)
    assert layer_to_config(layer) == {"class": "test_roundtrip.Private", "config": {"size": 5}}
    assert _through_json(layer) == layer


def test_a_field_with_init_false_is_left_out_and_derived_again():
    layer = Derived(k=4)
    assert layer_to_config(layer) == {"class": "test_roundtrip.Derived", "config": {"k": 4}}
    rebuilt = _through_json(layer)
    assert rebuilt == layer and rebuilt.twice == 8


def test_nested_in_a_sequential_they_round_trip():
    net = L.Sequential([Private(size=2), L.Dense(3), Derived(k=5)])
    assert _through_json(net) == net


def test_a_converter_that_does_not_round_trip_is_refused_naming_the_field():
    with pytest.raises(ValueError) as caught:
        layer_to_config(L.Sequential([L.Dense(3), Doubled(3)]))
    assert str(caught.value) == (
        "cannot save Doubled: field 'width' is 6 but the layer rebuilt from the saved config "
        "has 12; a saved layer must be rebuilt equal from its __init__ arguments"
    )


def test_a_list_field_saves_and_comes_back_as_a_tuple():
    # JSON has one kind of sequence; a layer reads a list and a tuple alike
    assert _through_json(Listed([1, [2, 3]])) == Listed((1, (2, 3)))
    assert _through_json(Listed((1, (2, 3)))) == Listed((1, (2, 3)))


# -- the registry ------------------------------------------------------------------------


def test_a_plain_subclass_of_a_built_in_layer_registers_and_round_trips():
    @register_layer(name="test_roundtrip.MyDense")
    class MyDense(L.Dense):  # attrs fields inherited from Dense
        pass

    layer = MyDense(3, use_bias=False)
    again = _through_json(layer)
    assert type(again) is MyDense and again == layer


def test_a_class_that_is_not_an_attrs_class_is_refused():
    for make in (
        lambda: register_layer(name="test_roundtrip.Plain")(type("Plain", (_Identity,), {})),
        lambda: attrs.frozen(register_layer(type("Order", (_Identity,), {}))),
    ):
        with pytest.raises(TypeError) as caught:
            make()
        assert str(caught.value).endswith(
            " is not an attrs class; layers must be attrs classes: put @register_layer above "
            "@attrs.frozen"
        )
    assert "Plain" not in L.registered_layers() and "Order" not in L.registered_layers()


def _define_twice():
    @register_layer(name="test_roundtrip.Twice")
    @attrs.frozen
    class Twice(_Identity):
        k: int = 1

    return Twice


def test_a_layer_of_a_class_defined_again_is_told_apart_from_an_unregistered_one():
    old = _define_twice()(2)
    new = _define_twice()(2)
    assert layer_to_config(new) == {"class": "test_roundtrip.Twice", "config": {"k": 2}}
    with pytest.raises(ValueError) as caught:
        layer_to_config(L.Sequential([old]))
    assert str(caught.value) == (
        "Twice was registered as 'test_roundtrip.Twice', but its class has been defined again "
        "since this layer was made (a re-run notebook cell, a reloaded module), and the name "
        "now belongs to the new class; make the layer again from the new class to save it"
    )

    @attrs.frozen
    class Unregistered(Derived):
        pass

    with pytest.raises(ValueError, match="^Unregistered is not registered; decorate it with"):
        layer_to_config(Unregistered(3))


# -- what a field may hold ---------------------------------------------------------------


@register_layer(name="test_roundtrip.Fields")
@attrs.frozen
class Fields(_Identity):
    extra: object = None


@pytest.mark.parametrize(
    "extra",
    [
        {"a": (1, 2)},
        {"a": {"b": (3, (4,))}, "c": None},
        {"dense": L.Dense(3)},
        (L.Dense(2), {"x": 1.5}),
        {"class": "x", "other": 1},
    ],
)
def test_dicts_round_trip_with_tuples_and_layers_inside(extra):
    assert _through_json(Fields(extra)) == Fields(extra)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {1: 2},
            "cannot save Fields.extra: its dict key 1 is not a string, and the file's JSON keys "
            "are strings (it would load as a different key)",
        ),
        (
            {"a": {(1, 2): 3}},
            "cannot save Fields.extra: its dict key (1, 2) is not a string, and the file's JSON "
            "keys are strings (it would load as a different key)",
        ),
        (
            frozenset({1}),
            "cannot save Fields.extra: a frozenset cannot be stored in the file's JSON; a "
            "layer's fields hold None, bools, numbers, strings, layers, and tuples, lists and "
            "dicts (with string keys) of them",
        ),
    ],
)
def test_what_json_cannot_hold_is_refused_naming_the_class_and_field(extra, message):
    with pytest.raises(TypeError) as caught:
        layer_to_config(L.Sequential([L.Dense(2), Fields(extra)]))
    assert str(caught.value) == message


def test_a_dtype_or_an_array_in_a_field_is_refused():
    import numpy

    for extra in (numpy.dtype("float32"), numpy.zeros(2)):
        with pytest.raises(TypeError) as caught:
            layer_to_config(Fields(extra))
        assert str(caught.value).startswith(
            f"cannot save Fields.extra: a {type(extra).__name__} cannot be stored in the file's "
            "JSON;"
        )


def test_an_unknown_class_says_to_import_the_module_that_defines_it():
    with pytest.raises(ValueError) as caught:
        layer_from_config({"class": "mylayers.Scale", "config": {}})
    message = str(caught.value)
    assert message.startswith(
        "unknown layer class 'mylayers.Scale': a custom layer's class is known once the module "
        "that defines it (with @register_layer) has been imported, so import that module "
        "before loading; known layers: "
    )
    assert "Conv2D" in message.split("known layers: ")[1].split(", ")


def test_a_nan_field_round_trips_also_nested():
    net = L.Sequential([Fields(float("nan")), L.Dense(2)])
    rebuilt = _through_json(net)
    assert rebuilt.layers[0].extra != rebuilt.layers[0].extra  # NaN
    assert rebuilt.layers[1] == net.layers[1]
