"""The three entry points of the functional core: `init`, `apply` and `grad`.

Each calls the layer's own pure method after normalising its arguments, so a layer can
be used the same way whether it is a built-in, a combinator or a user's class.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy

from .backend import is_cupy
from .layers.base import apply_with_tape, check_output, grad_from_tape, init_layer
from .layers.combinators import Sequential

__all__ = ["apply", "as_host_rng", "grad", "init"]


def as_host_rng(rng: int | numpy.random.Generator | None) -> numpy.random.Generator:
    """A host numpy Generator from an int seed, a Generator, or None (fresh entropy)."""
    if isinstance(rng, numpy.random.Generator):
        return rng
    return numpy.random.default_rng(rng)  # host


def _as_device_rng(rng: Any, xp: Any) -> Any:
    """An `xp` random generator from an int seed, or `rng` unchanged."""
    if rng is None or not isinstance(rng, (int, numpy.integer)):
        return rng
    return xp.random.default_rng(int(rng))


def _check_xp(xp: Any, function: str) -> None:
    """TypeError unless `xp` is an array module (numpy, cupy): a name such as "numpy" is not."""
    if xp is numpy or isinstance(xp, ModuleType):
        return
    raise TypeError(
        f"{function}: xp must be the array module, numpy or cupy "
        f"(backend.array_module('cpu') or backend.array_module('cuda') gives it for a "
        f"device name), got {xp!r}"
    )


def _check_batch(x: Any, xp: Any) -> None:
    """TypeError unless `x` is an array of `xp`: a numpy.ndarray for numpy, an array that is
    not one for cupy, something with a shape and a dtype for another module. Its type is
    looked at, never its values."""
    if xp is numpy:
        fits = isinstance(x, numpy.ndarray)
    else:
        fits = hasattr(x, "shape") and hasattr(x, "dtype")
        fits = fits and not (is_cupy(xp) and isinstance(x, numpy.ndarray))
    if fits:
        return
    kind = type(x)
    kind = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    # a device array refuses numpy.asarray: it is copied to the host by its get()
    on_device = hasattr(x, "get") and hasattr(x, "shape")
    convert = "x.get()" if xp is numpy and on_device else f"{xp.__name__}.asarray(x)"
    raise TypeError(
        f"apply: x must be an array of {xp.__name__} (the batch, shaped (N, *input_shape)), "
        f"got {kind}; convert it with {convert}"
    )


def _floating_dtype(dtype: Any) -> numpy.dtype:
    """`dtype` as a numpy dtype; ValueError unless it is floating (float16, 32 or 64): an
    integer dtype would truncate the drawn weights, to all zeros for most of them."""
    dtype = numpy.dtype(dtype)  # host
    if dtype.kind != "f":
        raise ValueError(
            f"init: dtype must be a floating dtype such as 'float32' or 'float64', got {dtype.name}"
        )
    return dtype


def init(layer, input_shape, *, rng, xp=numpy, dtype="float32") -> tuple[Any, Any]:
    """Create the parameters and state of `layer` for inputs of `input_shape`.

    Args:
        layer: any layer (built-in, combinator or user class).
        input_shape: shape of one sample, no batch axis, e.g. (1, 28, 28).
        rng: an int seed or a `numpy.random.Generator`. Weights are drawn on the host, then
            moved to `xp`, so one seed gives the same weights on CPU and GPU.
        xp: the array module, numpy or cupy (not its name: `backend.array_module("cpu")`
            gives the module for a device name).
        dtype: a floating dtype: float32 by default, float64 for gradient checks (any
            other dtype is a ValueError).

    Returns:
        (params, state): pytrees of `xp` arrays.
    """
    _check_xp(xp, "init")
    shape = tuple(int(d) for d in input_shape)
    dtype = _floating_dtype(dtype)
    return init_layer(layer, shape, as_host_rng(rng), xp=xp, dtype=dtype)


def apply(layer, params, state, x, *, training=False, rng=None, xp=numpy) -> tuple[Any, Any, Any]:
    """Run `layer` forward on the batch `x` of shape (N, *input_shape).

    Args:
        x: an array of `xp` (a list, or a NumPy array with xp=cupy, is a TypeError).
        xp: the array module, numpy or cupy (a TypeError otherwise).
        training: True during training (dropout active, batch statistics, a cache kept).
        rng: a generator of `xp` for layers that draw random numbers (Dropout), or an int
            seed. In a training loop make one generator before the loop and pass it to
            every call, so each batch gets new draws. An int seed starts a new generator
            at each call, so every call with the same seed draws the same numbers (the
            same dropout mask). That is what calls that must repeat their draws want
            (the forward passes of a gradient check), so an int stays accepted; in a
            loop it is a mistake: `rng=epoch` gives every batch of an epoch one mask.
            None is enough when no layer draws (at inference, or without Dropout);
            Dropout refuses it when training.

    Returns:
        (y, new_state, cache): the output (N, *output_shape), the updated state, and what
        `grad` needs (None when `training=False`): for a Sequential its own cache, one
        `Tape` per layer; for any other layer a `Tape` of the layer's cache. A Tape also
        holds the shapes of the layer's input and output, which `grad` checks.
    """
    _check_xp(xp, "apply")
    _check_batch(x, xp)
    rng = _as_device_rng(rng, xp)
    if isinstance(layer, Sequential):  # its cache holds a Tape per child already
        y, new_state, cache = layer.apply(params, state, x, training=training, rng=rng, xp=xp)
    else:
        y, new_state, cache = apply_with_tape(
            layer, params, state, x, training=training, rng=rng, xp=xp
        )
        check_output(layer, x.shape, y.shape)  # once per input shape
    return y, new_state, (cache if training else None)


def grad(layer, params, cache, dy, *, xp=numpy, input_grad=True) -> tuple[Any, Any]:
    """Back-propagate `dy` (dLoss/dy, shaped like the output) through `layer`.

    `cache` is what `apply(..., training=True)` returned. A dy of another shape than the
    output's, and a layer's grad returning dparams not shaped like its params or a dx not
    shaped like its input, raise ShapeError naming the layer and both shapes (the checks
    compare shapes only: no value is read, on a GPU either).

    Returns:
        (dparams, dx): gradients shaped like `params`, and dLoss/dx shaped like the input
        (None when `input_grad=False`, which saves the work for the first layer).
    """
    _check_xp(xp, "grad")
    if cache is None:
        raise ValueError(
            f"grad of {layer!r} needs the cache of a forward pass made with training=True"
        )
    if isinstance(layer, Sequential):  # checks each child's Tape itself
        return layer.grad(params, cache, dy, xp=xp, input_grad=input_grad)
    return grad_from_tape(layer, params, cache, dy, xp=xp, input_grad=input_grad)
