"""The shapes and dtypes `layer.init` gives, without allocating the parameters.

Checking a file against its architecture needs the shapes and dtypes of the parameters
and state the architecture makes. The architecture comes from the file and can claim any
size (a 30 KB file whose Dense has 20,000,000 units), so the check must not make real
arrays. `init_shapes` runs the layer's own `init` with an array module and a random
generator whose arrays hold no data: a NumPy view of one element broadcast to the full
shape (all strides 0), so an array of any claimed size costs a few bytes.

The built-in layers only create arrays with zeros, ones, full and random draws, which are
all covered. Anything else (a custom layer computing with its arrays, other NumPy
functions) goes to NumPy itself; such a layer may get real arrays, and when it cannot
work with the data-less ones `init_shapes` raises `NeedsData` so the caller can fall
back to a real init.
"""

from __future__ import annotations

from typing import Any

import numpy

__all__ = ["ImpossibleShape", "NeedsData", "init_shapes", "placeholder"]


class NeedsData(Exception):
    """The layer's init did something the data-less arrays cannot do."""


class ImpossibleShape(ValueError):
    """The architecture asks for an array no machine could hold (or a negative size)."""


class Placeholder(numpy.ndarray):
    """A read-only array of one repeated element, with a real array's shape and dtype."""

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        return placeholder(self.shape, dtype)


def _as_shape(shape: Any) -> tuple[int, ...]:
    if shape is None:
        return ()
    if isinstance(shape, (int, numpy.integer)):
        return (int(shape),)
    return tuple(int(d) for d in shape)


def placeholder(shape: Any, dtype: Any = "float64") -> Placeholder:
    """A data-less array of `shape` and `dtype` (ImpossibleShape for a negative or a too
    large shape)."""
    shape = _as_shape(shape)
    try:
        view = numpy.broadcast_to(numpy.zeros((), numpy.dtype(dtype)), shape)
    except ValueError:
        raise ImpossibleShape(f"it needs an array of shape {shape}, which cannot exist") from None
    return view.view(Placeholder)


class _ShapeOnlyModule:
    """numpy, except that the functions layers create arrays with make placeholders."""

    def zeros(self, shape, dtype=float, *args, **kwargs):
        return placeholder(shape, dtype)

    ones = empty = zeros

    def full(self, shape, fill_value, dtype=None, *args, **kwargs):
        return placeholder(shape, numpy.result_type(fill_value) if dtype is None else dtype)

    def zeros_like(self, a, dtype=None, *args, **kwargs):
        return placeholder(numpy.shape(a), a.dtype if dtype is None else dtype)

    ones_like = empty_like = zeros_like

    def full_like(self, a, fill_value, dtype=None, *args, **kwargs):
        return placeholder(numpy.shape(a), a.dtype if dtype is None else dtype)

    def asarray(self, a, dtype=None, *args, **kwargs):
        if isinstance(a, Placeholder):
            return a if dtype is None else a.astype(dtype)
        return numpy.asarray(a, dtype=dtype)

    array = asarray

    def __getattr__(self, name: str) -> Any:
        return getattr(numpy, name)


class _ShapeOnlyGenerator:
    """A `numpy.random.Generator` whose draws of a given size are placeholders."""

    def __init__(self) -> None:
        self._real = numpy.random.default_rng(0)

    def _draw(self, method: str, size, dtype, *args, **kwargs):
        if size is None:  # one number: draw it for real
            return getattr(self._real, method)(*args, **kwargs)
        return placeholder(size, dtype)

    def normal(self, loc=0.0, scale=1.0, size=None):
        return self._draw("normal", size, numpy.float64, loc, scale)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._draw("uniform", size, numpy.float64, low, high)

    def standard_normal(self, size=None, dtype=numpy.float64, out=None):
        return self._draw("standard_normal", size, dtype, dtype=dtype)

    def random(self, size=None, dtype=numpy.float64, out=None):
        return self._draw("random", size, dtype, dtype=dtype)

    def integers(self, low, high=None, size=None, dtype=numpy.int64, endpoint=False):
        return self._draw("integers", size, dtype, low, high, dtype=dtype, endpoint=endpoint)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def init_shapes(layer: Any, input_shape: tuple[int, ...], dtype: Any) -> tuple[Any, Any]:
    """(params, state) as `layer.init` makes them for `input_shape`, with placeholders for
    arrays: the structure, shapes and dtypes of the real ones, and almost no memory.

    Raises ShapeError when a layer refuses its input shape, ImpossibleShape when an array
    could not exist, and NeedsData when the layer's init fails on placeholders in another
    way (a custom layer that computes with or writes into its arrays).
    """
    from convnet_core.layers import ShapeError

    shape = tuple(int(d) for d in input_shape)
    xp, rng = _ShapeOnlyModule(), _ShapeOnlyGenerator()
    try:
        return layer.init(shape, rng, xp=xp, dtype=numpy.dtype(dtype))
    except (ShapeError, ImpossibleShape):
        raise
    except Exception as error:
        raise NeedsData(f"{type(error).__name__}: {error}") from error
