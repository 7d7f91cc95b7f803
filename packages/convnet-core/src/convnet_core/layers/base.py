"""What every layer is: the protocol, the registry of names, and shared checks.

A layer is an immutable spec (an `attrs.frozen` class holding only hyper-parameters)
with four pure methods:

    output_shape(input_shape) -> output_shape          per sample, no batch axis
    init(input_shape, rng, *, xp, dtype) -> (params, state)
    apply(params, state, x, *, training, rng, xp) -> (y, new_state, cache)
    grad(params, cache, dy, *, xp, input_grad=True) -> (dparams, dx)

`rng` in `init` is a host `numpy.random.Generator` (so one seed gives the same weights on
CPU and GPU); in `apply` it is a generator of `xp`, or None when not training. `cache` is
whatever `grad` needs and None when `training=False`. Nothing is mutated.

`register_layer` gives a layer class a name for serialization; every built-in layer is
registered, and user layers register the same way.

Shapes are checked where layers meet, so that a mistake in one layer is an error naming
it rather than numbers silently broadcast. Each layer's `apply` checks its input
(`check_input`; `check_input_dtype` against its parameters) and the shapes of its params
and state (`check_entries`); a combinator checks that its params, state and cache have
one entry per child (`check_count`, `check_keys`), and that a child's y is shaped as its
output_shape says (the last child's by `check_output`; another's when the next child
refuses it, `output_disagreement`). `apply_with_tape` / `grad_from_tape`,
through which `convnet_core.apply`/`grad` and the combinators call a layer, check its
backward pass: dy against the output's shape, the returned dx against the input's, and
dparams against params (shapes and dtypes). Those checks run on the host; they never
read a value.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol, runtime_checkable

import attrs
import numpy

from ..tree import grad_mismatch

__all__ = [
    "Layer",
    "ProtocolError",
    "ShapeError",
    "Tape",
    "UnknownLayerError",
    "apply_with_tape",
    "check_count",
    "check_entries",
    "check_input",
    "check_input_dtype",
    "check_keys",
    "check_layer",
    "check_output",
    "grad_from_tape",
    "init_layer",
    "layer_from_config",
    "layer_name",
    "layer_to_config",
    "name_of",
    "output_disagreement",
    "register_layer",
    "registered_layers",
    "unpack_returned",
]


@runtime_checkable
class Layer(Protocol):
    """The four pure methods every layer implements (see the module docstring)."""

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one output sample for one input sample of `input_shape` (no batch
        axis), e.g. (1, 28, 28) -> (8, 28, 28); ShapeError when the layer cannot take it."""

    def init(self, input_shape, rng, *, xp, dtype):
        """(params, state) for inputs of `input_shape` (per sample): dicts (or tuples, for
        combinators) of `xp` arrays of `dtype`, drawn from the host Generator `rng`."""

    def apply(self, params, state, x, *, training, rng, xp):
        """x (N, *input_shape) -> (y (N, *output_shape), new_state, cache); the cache is
        what `grad` needs, None when not `training`."""

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """dy (N, *output_shape), shaped like y -> (dparams, dx): dparams shaped like
        params, dx (N, *input_shape) shaped like x, or None when not `input_grad`."""


class ShapeError(ValueError):
    """An input whose shape (or floating dtype) a layer cannot take, a parameter or state
    entry shaped unlike what the layer needs, or a gradient shaped (or typed) unlike what
    it is the gradient of; the message names the layer and both shapes (dtypes)."""


class UnknownLayerError(ValueError):
    """A layer config names a class that no `register_layer` has registered in this
    program: a custom layer whose module has not been imported, or a misspelt name."""


class ProtocolError(TypeError):
    """A layer method that returned something of another form than the protocol's: apply
    not a tuple (y, new_state, cache), grad not (dparams, dx), init not (params, state) of
    dicts; the message names the layer and what it returned."""


def check_layer(layer: Any, where: str) -> Any:
    """`layer`, when it has the four methods of the `Layer` protocol; TypeError otherwise,
    naming `where` it was given (a string, a number or a class where a layer belongs)."""
    if not isinstance(layer, Layer) or isinstance(layer, type):
        raise TypeError(
            f"{where}: {layer!r} is not a layer (one with output_shape, init, apply and grad, "
            "such as Conv2D(8) or Dense(10))"
        )
    return layer


def check_input(layer: Any, x: Any, expected: tuple[int | None, ...]) -> None:
    """Raise ShapeError unless `x.shape` is (N, *expected); None in `expected` matches any size.

    `expected` is per sample (no batch axis).
    """
    actual = tuple(x.shape)
    if not actual or not _fits(actual[1:], expected):  # a batch axis, then `expected`
        shown = ", ".join("*" if d is None else str(d) for d in expected)
        raise ShapeError(f"{layer!r} expected input of shape (N, {shown}) but got {actual}")


def check_input_dtype(layer: Any, x: Any, name: str, param: Any) -> None:
    """Raise ShapeError when `x` is floating point of another dtype than the floating
    parameter `name`, or of a dtype that arithmetic with it would widen: the output would
    silently take another dtype (float64 from a float64 batch, or from an int32 or int64
    one, through float32 weights), and the gradients with it.

    An integer batch that the arithmetic promotes to the parameter's dtype passes (uint8
    images, int16, bool). Mixed precision casts the parameters and the batch alike.
    """
    if x.dtype != param.dtype and (x.dtype.kind == "f" or not _stays_in(x.dtype, param.dtype)):
        raise ShapeError(
            f"{layer!r} expected input of dtype {param.dtype} (that of parameter {name!r}) "
            f"but got {x.dtype}; cast the batch with x.astype({param.dtype.name!r})"
        )


@functools.lru_cache(maxsize=64)
def _stays_in(input_dtype: numpy.dtype, param_dtype: numpy.dtype) -> bool:
    """Whether arithmetic of an `input_dtype` array with a `param_dtype` one (a floating
    dtype) gives `param_dtype`: a NumPy rule, cached, as every step asks it."""
    # a rule on dtypes, worked out on the host
    promoted = numpy.result_type(input_dtype, param_dtype)  # host
    return param_dtype.kind != "f" or promoted == param_dtype


def check_entries(layer: Any, what: str, arrays: Any, expected: dict[str, tuple]) -> None:
    """Raise ShapeError unless `arrays` (the layer's params or state, each entry a `what`:
    "parameter", "state entry") is a dict with the keys of `expected`, whose arrays have
    the shapes given there; None in a shape matches any size.

    Shapes are those the layer's own settings and its other arrays imply, e.g. Dense's
    {"W": (None, units), "b": (units,)}: a (1,) bias is refused rather than broadcast.
    Compares keys and shape tuples only (host work, no value is read).
    """
    check_keys(layer, what, arrays, expected.keys())
    for name, want in expected.items():
        got = getattr(arrays[name], "shape", ())
        if got != want and not _fits(got, want):  # runs every step: equality first
            shown = ", ".join("*" if d is None else str(d) for d in want)
            shown = f"({shown},)" if len(want) == 1 else f"({shown})"
            raise ShapeError(
                f"{layer!r} expected {what} {name!r} of shape {shown} but got {tuple(got)}"
            )


def check_keys(layer: Any, what: str, tree: Any, keys: Any) -> None:
    """Raise ShapeError unless `tree` (the layer's params, state or cache: `what` names an
    entry of it, "parameter") is a dict with exactly the keys `keys` (a set or dict keys)."""
    if not isinstance(tree, dict) or tree.keys() != keys:
        raise ShapeError(
            f"{name_of(layer)} expected {what} keys {sorted(keys)} but got {_keys_of(tree)}"
        )


def check_count(layer: Any, what: str, tree: Any, count: int, *, each: str = "layer") -> None:
    """Raise ShapeError unless `tree` (a combinator's params, state or cache: `what`) is a
    tuple or list with one entry per `each` (child layer, path), `count` in all."""
    if not isinstance(tree, (tuple, list)) or len(tree) != count:
        raise ShapeError(
            f"{name_of(layer)} expected {what} with one entry per {each} ({count}) but got "
            f"{_entries_of(tree)}"
        )


def name_of(layer: Any) -> str:
    """How an error names `layer`: its repr, or for a combinator (whose repr holds every
    child's) its `short_name`, e.g. "Sequential(Conv2D, Flatten, Dense)"."""
    short = getattr(layer, "short_name", None)
    return short if isinstance(short, str) else repr(layer)


def _entries_of(tree: Any) -> str:
    """How many entries a tuple or list has, or what `tree` is instead: "a tuple of 2",
    "None", "a dict"."""
    if tree is None:
        return "None"
    if isinstance(tree, (tuple, list)):
        return f"a {type(tree).__name__} of {len(tree)}"
    return f"a {type(tree).__name__}"


def _keys_of(arrays: Any) -> str:
    """The sorted keys of a dict, or what `arrays` is instead: "['W']", "None", "a tuple"."""
    if isinstance(arrays, dict):
        return repr(sorted(arrays))
    return "None" if arrays is None else f"a {type(arrays).__name__}"


def _fits(shape: tuple[int, ...], pattern: tuple[int | None, ...]) -> bool:
    """Whether `shape` has as many axes as `pattern` and its sizes (None: any size).

    A plain loop: it runs for every layer at every step, and a generator is slower.
    """
    if len(shape) != len(pattern):
        return False
    for want, got in zip(pattern, shape):  # noqa: B905 (the lengths were just compared)
        if want is not None and want != got:
            return False
    return True


@attrs.define
class Tape:
    """What a training forward pass of one layer leaves for its backward pass: the
    layer's own cache and the shapes and dtypes of its input x (N, *input_shape) and
    output y (N, *output_shape), which `grad_from_tape` checks the gradients against
    (None for a dtype: not checked).

    Written once by `apply_with_tape` and only read after. Not frozen: one is made per
    layer and step, and a frozen attrs class takes three times as long to make.
    """

    cache: Any
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    x_dtype: Any = None
    y_dtype: Any = None


# what each method returns, as the protocol writes it
_FORMS = {"apply": "(y, new_state, cache)", "grad": "(dparams, dx)", "init": "(params, state)"}


def unpack_returned(layer: Any, method: str, returned: Any) -> Any:
    """What `layer.<method>` ("apply", "grad", "init") returned, when it is a tuple (or
    list) with one entry per item of the method's form, e.g. (y, new_state, cache); a
    ProtocolError (a TypeError) naming the layer, the form and what came back otherwise
    (a tuple of 2, None), rather than a bare unpacking error. The callers test for an
    exact tuple of the right length first, which every step then costs."""
    form = _FORMS[method]
    if not isinstance(returned, (tuple, list)) or len(returned) != form.count(",") + 1:
        raise ProtocolError(
            f"{name_of(layer)}.{method} must return a tuple {form} but returned "
            f"{_entries_of(returned)}"
        )
    return returned


def init_layer(layer: Any, input_shape: tuple, rng: Any, *, xp: Any, dtype: Any) -> tuple:
    """`layer.init(...)`, when it returns (params, state), each a dict (or a tuple or list,
    for a combinator); ProtocolError (a TypeError) naming the layer and what it returned
    otherwise."""
    returned = layer.init(input_shape, rng, xp=xp, dtype=dtype)
    params, state = unpack_returned(layer, "init", returned)
    for what, tree in (("params", params), ("state", state)):
        if not isinstance(tree, (dict, tuple, list)):
            raise ProtocolError(
                f"{name_of(layer)}.init must return {what} as a dict (or a tuple, for a "
                f"combinator) but returned {_entries_of(tree)}; a layer without {what} "
                "returns {}"
            )
    return params, state


def apply_with_tape(layer, params, state, x, *, training, rng, xp) -> tuple[Any, Any, Any]:
    """`layer.apply(...)`, with the cache (when training) kept in a `Tape` with the shapes
    of x and y: (y (N, *output_shape), new_state, Tape or None).

    When training, the new state must have the structure of the state given and, entry by
    entry, its shape and its dtype, or x's float dtype (a float16 statistic of a float16 x
    under mixed precision, which `precision` casts back); a ShapeError names the layer
    otherwise: a layer that changes its state is named at its first step, not by a later
    layer or at saving. A combinator's state is its children's, each checked already.
    """
    returned = layer.apply(params, state, x, training=training, rng=rng, xp=xp)
    if type(returned) is not tuple or len(returned) != 3:
        returned = unpack_returned(layer, "apply", returned)
    y, new_state, cache = returned
    if not training:
        return y, new_state, None
    if (
        new_state is not state
        and not getattr(layer, "holds_layers", False)
        and grad_mismatch(state, new_state, dtypes=True) is not None  # the quick test
    ):
        found = _state_difference(state, new_state, (), x.dtype)
        if found is not None:
            raise ShapeError(f"{layer!r}.apply returned {found}")
    return y, new_state, Tape(cache, tuple(x.shape), tuple(y.shape), x.dtype, y.dtype)


def output_disagreement(layer: Any, x_shape: tuple, y_shape: tuple) -> str | None:
    """How y of shape `y_shape`, which `layer.apply` returned for an input of `x_shape`
    (both with the batch axis), disagrees with `layer.output_shape`, in words; None when
    they agree, or when output_shape refuses the input (that error is the layer's own)."""
    try:
        expected = (x_shape[0], *layer.output_shape(tuple(x_shape[1:])))
    except ShapeError:
        return None
    if tuple(y_shape) == expected:
        return None
    return (
        f"{name_of(layer)}.apply returned y of shape {tuple(y_shape)} for an input of shape "
        f"{tuple(x_shape)}, but its output_shape({tuple(x_shape[1:])}) is {expected[1:]}"
    )


# (id(layer), input shape) -> the layer, for the pairs check_output has found in agreement;
# the layer is kept so that its id is not reused while the entry stands.
_AGREED: dict[tuple[int, tuple], Any] = {}


def check_output(layer: Any, x_shape: tuple, y_shape: tuple) -> None:
    """ShapeError unless `y_shape`, the shape of what `layer.apply` returned for an input
    of `x_shape`, is what `layer.output_shape` says (see `output_disagreement`).

    Runs at every step for the last layer of a network, whose output nothing after it
    checks: output_shape is asked once per (layer, input shape), then a dict look-up
    answers (layers are immutable, so the answer stands).
    """
    key = (id(layer), x_shape)
    if _AGREED.get(key) is layer:
        return
    found = output_disagreement(layer, x_shape, y_shape)
    if found is not None:
        raise ShapeError(found)
    if len(_AGREED) >= 1024:  # a long session of throw-away layers: start again
        _AGREED.clear()
    _AGREED[key] = layer


def _state_difference(state: Any, new: Any, path: tuple, x_dtype: Any) -> str | None:
    """The first difference between the new state and the state a layer was given, in
    words that follow "apply returned": "new state entry 'mean' of shape (1, 6) but the
    state entry has shape (6,)"; None when there is none. A float entry may come back in
    `x_dtype`, the layer's input's, when that is a float too."""
    at = f" at '{'/'.join(str(key) for key in path)}'" if path else ""
    if isinstance(state, dict):
        if not isinstance(new, dict) or new.keys() != state.keys():
            return f"a new state{at} with keys {_keys_of(new)} but the state has {sorted(state)}"
        children = [(key, state[key], new[key]) for key in state]
    elif isinstance(state, (tuple, list)):
        if not isinstance(new, (tuple, list)) or len(new) != len(state):
            return (
                f"a new state{at} that is {_entries_of(new)} but the state is {_entries_of(state)}"
            )
        children = list(zip(range(len(state)), state, new, strict=True))
    else:
        return _state_entry_difference(state, new, path, x_dtype)
    for key, entry, new_entry in children:
        found = _state_difference(entry, new_entry, (*path, key), x_dtype)
        if found is not None:
            return found
    return None


def _state_entry_difference(entry: Any, new: Any, path: tuple, x_dtype: Any) -> str | None:
    """How one new state entry (at `path`) differs from the array it replaces, or None."""
    name = "/".join(str(key) for key in path)
    if new is None or isinstance(new, (dict, tuple, list)):
        return f"new state entry {name!r} as {_entries_of(new)}, not an array"
    want, got = tuple(getattr(entry, "shape", ())), tuple(getattr(new, "shape", ()))
    if got != want:
        return f"new state entry {name!r} of shape {got} but the state entry has shape {want}"
    want, got = getattr(entry, "dtype", None), getattr(new, "dtype", None)
    if want is None or got is None or got == want:  # a Python number has no dtype
        return None
    if got == x_dtype and got.kind == want.kind == "f":  # computed from x, in its dtype
        return None
    return f"new state entry {name!r} of dtype {got} but the state entry has dtype {want}"


def grad_from_tape(layer, params, tape, dy, *, xp, input_grad=True) -> tuple[Any, Any]:
    """`layer.grad(...)` on the cache kept by `apply_with_tape`, with the shapes checked.

    dy must have the shape of the output y and, when y is floating point, its dtype (on a
    GPU the fused kernels take one dtype only); the layer must return dparams shaped and
    typed like `params` and, when `input_grad`, dx shaped like x (and typed like it, when
    x is floating point). Anything else is a ShapeError that names the layer and both
    shapes (or dtypes), before a wrong dy is silently broadcast or a wrong gradient
    reaches the optimizer. The checks compare shapes and dtypes only (host work, no value
    is read).
    """
    if not isinstance(tape, Tape):
        raise TypeError(
            f"grad of {layer!r} takes the cache that convnet_core.apply(training=True) "
            f"returned, not a {type(tape).__name__} (layer.grad takes layer.apply's cache)"
        )
    got = tuple(dy.shape)
    if got != tape.y_shape:
        raise ShapeError(
            f"{layer!r}.grad expected dy of shape {tape.y_shape} (the output's) but got {got}"
        )
    if dy.dtype is not tape.y_dtype and _other_floating_dtype(dy, tape.y_dtype):
        raise ShapeError(
            f"{layer!r}.grad expected dy of dtype {tape.y_dtype} (the output's) but got "
            f"{dy.dtype}; cast it with dy.astype({tape.y_dtype.name!r})"
        )
    returned = layer.grad(params, tape.cache, dy, xp=xp, input_grad=input_grad)
    if type(returned) is not tuple or len(returned) != 2:
        returned = unpack_returned(layer, "grad", returned)
    dparams, dx = returned
    mismatch = grad_mismatch(params, dparams, dtypes=True)
    if mismatch is not None:
        raise ShapeError(f"{layer!r}.grad: {mismatch}")
    if input_grad:
        got = None if dx is None else tuple(dx.shape)
        if got != tape.x_shape:
            raise ShapeError(
                f"{layer!r}.grad returned dx of shape {got} for an input of shape "
                f"{tape.x_shape}; dx must be shaped like the input"
            )
        if dx.dtype is not tape.x_dtype and _other_floating_dtype(dx, tape.x_dtype):
            raise ShapeError(
                f"{layer!r}.grad returned dx of dtype {dx.dtype} for an input of dtype "
                f"{tape.x_dtype}; dx must have the input's dtype"
            )
    return dparams, dx


def _other_floating_dtype(gradient: Any, dtype: Any) -> bool:
    """Whether `gradient` (dy, dx) has another dtype than the floating `dtype` of what it
    is the gradient of. An integer input or output (uint8 images) has no gradient dtype
    of its own, and None (a Tape made without dtypes) none to check."""
    return gradient.dtype != dtype and dtype is not None and dtype.kind == "f"


# ---------------------------------------------------------------------------------------
# The registry: names <-> classes, for saving architectures as JSON.

_REGISTRY: dict[str, type] = {}


def require_image_shape(layer: Any, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) from a per-sample shape, or a ShapeError naming the layer and the shape."""
    if len(input_shape) != 3:
        raise ShapeError(
            f"{layer!r} expects inputs of shape (N, C, H, W) but got per-sample shape "
            f"{tuple(input_shape)}"
        )
    c, h, w = input_shape
    return c, h, w


def register_layer(cls: type | None = None, *, name: str | None = None):
    """Class decorator that registers a layer under `name` (default: the class name).

    Registered layers can be saved and loaded by convnet-io. Use as `@register_layer` or
    `@register_layer(name="MyScale")`, above `@attrs.frozen`: a layer is an attrs class
    (its fields are what is saved), and a class not made by attrs itself is a TypeError
    (below `@attrs.frozen`, the decorator would register the class before attrs replaces
    it). Registering a class again under its name (a re-run notebook cell) replaces it.
    """

    def decorate(layer_cls: type) -> type:
        if not isinstance(layer_cls, type) or not attrs.has(layer_cls):
            raise TypeError(
                f"register_layer: {getattr(layer_cls, '__name__', layer_cls)} is not an attrs "
                "class; layers must be attrs classes: put @register_layer above @attrs.frozen"
            )
        key = name or layer_cls.__name__
        existing = _REGISTRY.get(key)
        if existing is not None and existing is not layer_cls:
            if (existing.__module__, existing.__qualname__) != (
                layer_cls.__module__,
                layer_cls.__qualname__,
            ):
                raise ValueError(f"a different layer is already registered as {key!r}")
        _REGISTRY[key] = layer_cls
        layer_cls._convnet_name = key
        return layer_cls

    return decorate(cls) if cls is not None else decorate


def registered_layers() -> dict[str, type]:
    """A copy of the registry: name -> layer class."""
    return dict(_REGISTRY)


def layer_name(layer: Any) -> str:
    """The registered name of a layer instance; ValueError when its class is unregistered
    (a subclass of a registered layer is not registered itself), or when the class has
    been defined again since the layer was made (the name now belongs to the new class)."""
    cls = type(layer)
    key = vars(cls).get("_convnet_name")  # not inherited: a subclass needs its own name
    if key is None:
        raise ValueError(
            f"{cls.__name__} is not registered; decorate it with @register_layer to save it"
        )
    if _REGISTRY.get(key) is not cls:
        raise ValueError(
            f"{cls.__name__} was registered as {key!r}, but its class has been defined again "
            "since this layer was made (a re-run notebook cell, a reloaded module), and the "
            "name now belongs to the new class; make the layer again from the new class to "
            "save it"
        )
    return key


_JSON_SCALARS = (bool, int, float, str)


def _to_json_value(value: Any, where: str) -> Any:
    """A field's value (or a value inside one) as the file's JSON holds it: a layer as its
    config, a tuple or list as a list, a dict (string keys) as a dict, a NumPy scalar as a
    number. TypeError naming `where` ("Scale.extra", the class and the field) for anything
    JSON cannot hold."""
    if _is_layer(value):
        return layer_to_config(value)
    if isinstance(value, (tuple, list)):
        return [_to_json_value(v, where) for v in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(
                    f"cannot save {where}: its dict key {key!r} is not a string, and the "
                    "file's JSON keys are strings (it would load as a different key)"
                )
        return {key: _to_json_value(v, where) for key, v in value.items()}
    if isinstance(value, numpy.generic):
        value = value.item()
    if value is None or isinstance(value, _JSON_SCALARS):
        return value
    raise TypeError(
        f"cannot save {where}: a {type(value).__name__} cannot be stored in the file's JSON; "
        "a layer's fields hold None, bools, numbers, strings, layers, and tuples, lists and "
        "dicts (with string keys) of them"
    )


def _is_layer(value: Any) -> bool:
    return attrs.has(type(value)) and hasattr(value, "apply") and hasattr(value, "grad")


def layer_to_config(layer: Any) -> dict[str, Any]:
    """{"class": name, "config": {argument: value}} for a registered attrs layer (nested
    too): one entry per argument of the class's __init__, under the argument's name (the
    attrs alias: `size` for a private field `_size`); a field with init=False is left out,
    as the class derives it.

    TypeError, naming the layer's class and the field, for a value the file's JSON cannot
    hold (an array, a set, a dict with other keys than strings); ValueError when the config
    does not rebuild an equal layer: a model is refused before it is saved, rather than
    saved for good and never loaded again.
    """
    key = layer_name(layer)
    cls = type(layer)
    config = {
        field.alias: _to_json_value(getattr(layer, field.name), f"{cls.__name__}.{field.name}")
        for field in attrs.fields(cls)
        if field.init
    }
    _check_rebuilds(layer, config)
    return {"class": key, "config": config}


def _check_rebuilds(layer: Any, config: dict[str, Any]) -> None:
    """ValueError unless the layer's class, called with `config` as the loader would call
    it, gives a layer equal to `layer`, field by field (those that take part in ==)."""
    cls = type(layer)
    try:
        rebuilt = cls(**{name: _from_json_value(value) for name, value in config.items()})
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"cannot save {cls.__name__}: its config {config!r} does not rebuild it: {error}"
        ) from None
    for field in attrs.fields(cls):
        before, after = getattr(layer, field.name), getattr(rebuilt, field.name)
        if field.eq and not _same_value(before, after):
            raise ValueError(
                f"cannot save {cls.__name__}: field {field.name!r} is {before!r} but the layer "
                f"rebuilt from the saved config has {after!r}; a saved layer must be rebuilt "
                "equal from its __init__ arguments"
            )


def _same_value(before: Any, after: Any) -> bool:
    """Whether a field's value survived the round trip: layers field by field, tuples and
    lists of the same length item by item (a list comes back as a tuple: JSON has one kind
    of sequence, and a layer reads either the same way), dicts key by key, anything else by
    ==, a NaN as NaN (which == would call different)."""
    if _is_layer(before):
        return type(after) is type(before) and all(
            _same_value(getattr(before, field.name), getattr(after, field.name))
            for field in attrs.fields(type(before))
            if field.eq
        )
    if isinstance(before, (tuple, list)):
        return (
            isinstance(after, (tuple, list))
            and len(after) == len(before)
            and all(_same_value(b, a) for b, a in zip(before, after))  # noqa: B905 (lengths compared)
        )
    if isinstance(before, dict):
        return (
            isinstance(after, dict)
            and after.keys() == before.keys()
            and all(_same_value(value, after[key]) for key, value in before.items())
        )
    try:
        return bool(before == after) or (before != before and after != after)
    except (TypeError, ValueError):  # an array's == is an array
        return False


def _from_json_value(value: Any) -> Any:
    """A field's value from the file's JSON: a layer's config as the layer, a list as a
    tuple, a dict with its values converted alike."""
    if isinstance(value, dict):
        if set(value) == {"class", "config"}:
            return layer_from_config(value)
        return {key: _from_json_value(v) for key, v in value.items()}
    if isinstance(value, list):
        return tuple(_from_json_value(v) for v in value)
    return value


def layer_from_config(config: dict[str, Any]) -> Any:
    """Rebuild a layer from `layer_to_config` output.

    Raises UnknownLayerError (a ValueError) for an unknown class name, saying that a custom
    layer's module must be imported first and listing the known names; ValueError for bad
    fields.
    """
    if not isinstance(config, dict) or "class" not in config:
        raise ValueError(f"a layer config must be a dict with a 'class' key, not {config!r}")
    key = config["class"]
    cls = _REGISTRY.get(key)
    if cls is None:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownLayerError(
            f"unknown layer class {key!r}: a custom layer's class is known once the module "
            "that defines it (with @register_layer) has been imported, so import that module "
            f"before loading; known layers: {known}"
        )
    fields = config.get("config", {})
    if not isinstance(fields, dict):
        raise ValueError(f"the config of {key} must be a dict, not {fields!r}")
    kwargs = {name: _from_json_value(value) for name, value in fields.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"cannot build {key} from {fields!r}: {error}") from None


def host_array(xp: Any, array: numpy.ndarray, dtype: Any) -> Any:
    """Move a host array (drawn on the CPU for reproducibility) to `xp` with `dtype`."""
    return xp.asarray(array.astype(dtype, copy=False))
