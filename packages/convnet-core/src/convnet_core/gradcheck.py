"""Gradient checking: compare a layer's `grad` with central finite differences in float64.

Point it at any layer, built-in or your own:

    report = convnet_core.check_grad(MyLayer(), params, state, x)
    print(report)            # worst relative error per parameter and for the input
    assert report.ok

The check turns the output into a scalar with a fixed random projection,
L(params, x) = Σ y · r, so that dL/dy = r is what `grad` back-propagates, and compares each
analytic derivative dL/dθ with (L(θ + ε) - L(θ - ε)) / 2ε, one element at a time.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy

from . import tree
from .layers.base import ProtocolError, ShapeError, apply_with_tape, grad_from_tape

__all__ = ["GradCheckReport", "LeafError", "check_grad"]

INPUT = "input"


@attrs.frozen
class LeafError:
    """The worst disagreement found in one array.

    error: max over elements of |analytic - numeric| / max(|analytic| + |numeric|, floor),
    where floor is the larger of 1e-3 times the largest |analytic| + |numeric| of this
    array and 1e-2 times the largest of all checked arrays (plus 1e-12): an element whose
    derivative is tiny next to the rest (a bias that BatchNorm cancels has an exact
    derivative of 0) is judged against that scale, not against rounding noise.
    """

    path: str
    error: float
    index: tuple
    analytic: float
    numeric: float
    checked: int


@attrs.frozen
class GradCheckReport:
    """The result of `check_grad`: one `LeafError` per parameter path, and one for the input."""

    layer: Any
    leaves: tuple
    tolerance: float
    eps: float

    @property
    def errors(self) -> dict[str, float]:
        """path -> worst relative error ("input" for the input gradient)."""
        return {leaf.path: leaf.error for leaf in self.leaves}

    @property
    def max_error(self) -> float:
        """The worst relative error over every checked array (0.0 when none was checked)."""
        return max((leaf.error for leaf in self.leaves), default=0.0)

    @property
    def ok(self) -> bool:
        """True when every relative error is at most `tolerance`."""
        return self.max_error <= self.tolerance

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        lines = [
            f"gradient check of {self.layer!r}: {verdict} "
            f"(max relative error {self.max_error:.2e}, tolerance {self.tolerance:.0e}, "
            f"eps {self.eps:.0e}, float64)"
        ]
        width = max([len(leaf.path) for leaf in self.leaves] + [4])
        lines.append(f"  {'path':<{width}}  {'rel. error':>10}  {'checked':>7}  worst at")
        for leaf in self.leaves:
            flag = "" if leaf.error <= self.tolerance else "  <-- too large"
            lines.append(
                f"  {leaf.path:<{width}}  {leaf.error:>10.2e}  {leaf.checked:>7}  "
                f"{leaf.index}: analytic {leaf.analytic:.6g}, numeric {leaf.numeric:.6g}{flag}"
            )
        return "\n".join(lines)


def _to_float64(value: Any, xp: Any) -> Any:
    """A float64 copy of a floating array leaf (other leaves unchanged)."""
    if hasattr(value, "dtype") and value.dtype.kind == "f":
        return xp.array(value, dtype=xp.float64, copy=True)
    return value


def _input_as_float64(x: Any, xp: Any) -> Any:
    """A float64 copy of the input batch, whatever its dtype (integers, bools, nested lists).

    The finite differences nudge this copy in place by ±eps, which an integer array would
    truncate; the caller's array is never written to.
    """
    return xp.array(xp.asarray(x), dtype=xp.float64, copy=True)


def _host_copy(array: Any) -> numpy.ndarray:
    """A float64 NumPy copy of a numpy or cupy array (safe from later in-place changes)."""
    if hasattr(array, "get"):  # cupy
        array = array.get()
    return numpy.array(array, dtype=numpy.float64, copy=True)  # host


def _element_indices(shape, limit, rng) -> list[tuple]:
    """Every index of an array of `shape`, or `limit` of them drawn at random."""
    total = math.prod(shape)
    if limit is None or total <= limit:
        flat = numpy.arange(total)  # host
    else:
        flat = numpy.sort(rng.choice(total, size=limit, replace=False))  # host
    return [tuple(int(i) for i in numpy.unravel_index(k, shape)) for k in flat]  # host


def _magnitude(analytic, numeric) -> numpy.ndarray:
    return numpy.abs(numpy.asarray(analytic)) + numpy.abs(numpy.asarray(numeric))  # host


def _leaf_error(path, analytic, numeric, indices, global_scale) -> LeafError:
    """Worst relative error between two host float64 vectors of derivatives."""
    analytic = numpy.asarray(analytic, dtype=numpy.float64)  # host
    numeric = numpy.asarray(numeric, dtype=numpy.float64)  # host
    checked = len(indices)
    if checked == 0:
        return LeafError(path, 0.0, (), 0.0, 0.0, 0)
    magnitude = _magnitude(analytic, numeric)
    floor = max(1e-3 * magnitude.max(), 1e-2 * global_scale) + 1e-12
    errors = numpy.abs(analytic - numeric) / numpy.maximum(magnitude, floor)  # host
    worst = int(errors.argmax())
    return LeafError(
        path,
        float(errors[worst]),
        indices[worst],
        float(analytic[worst]),
        float(numeric[worst]),
        checked,
    )


def check_grad(
    layer: Any,
    params: Any,
    state: Any,
    x: Any,
    *,
    xp: Any = numpy,
    eps: float = 1e-6,
    rng: int | numpy.random.Generator | None = 0,
    tolerance: float = 1e-5,
    max_elements: int | None = None,
    input_grad: bool = True,
) -> GradCheckReport:
    """Check `layer.grad` against central finite differences, in float64.

    Args:
        layer: any object following the layer protocol.
        params, state: as returned by `convnet_core.init` (any float dtype; copied to float64).
        x: an input batch (N, *input_shape) of any real dtype (copied to float64).
        xp: the array module the arrays live in.
        eps: the finite-difference step.
        rng: seed (or host Generator) for the random projection r and, re-seeded before
            every forward pass, for layers that draw random numbers (dropout): each pass
            then sees the same mask.
        tolerance: the largest relative error for which the report is `ok`.
        max_elements: check at most this many elements per array, drawn at random
            (None: every element).
        input_grad: also check dL/dx.

    Returns:
        A `GradCheckReport`: `.ok`, `.max_error`, `.errors` (path -> worst relative error,
        "input" for dL/dx), and a readable table from `str(report)`.

    Raises:
        ShapeError: the layer's gradients are not shaped (or typed) like its params, or its
            dx like x; ProtocolError: apply or grad returned another form than the
            protocol's. Both say "check_grad:", then what `fit` says, naming the layer.
    """
    host_rng = rng if isinstance(rng, numpy.random.Generator) else numpy.random.default_rng(rng)
    seed = int(host_rng.integers(2**31))  # host
    params = tree.map(lambda leaf: _to_float64(leaf, xp), params)
    state = tree.map(lambda leaf: _to_float64(leaf, xp), state)
    x = _input_as_float64(x, xp)

    def forward(p, inputs):
        y, _, tape = apply_with_tape(
            layer, p, state, inputs, training=True, rng=xp.random.default_rng(seed), xp=xp
        )
        return y, tape

    try:  # the checks of fit, with their words: what the layer returned, shapes, dtypes
        y, tape = forward(params, x)
        projection = xp.asarray(host_rng.standard_normal(tuple(y.shape)))  # r = dL/dy, float64
        dparams, dx = grad_from_tape(layer, params, tape, projection, xp=xp, input_grad=input_grad)
    except (ShapeError, ProtocolError) as error:
        raise type(error)(f"check_grad: {error}") from None

    def loss(p, inputs) -> float:
        return float(xp.sum(forward(p, inputs)[0] * projection))

    def numeric_derivatives(array, indices, evaluate) -> list[float]:
        """(L(a + ε e_i) - L(a - ε e_i)) / 2ε for each index i, perturbing `array` in place."""
        values = []
        for index in indices:
            original = float(array[index])
            array[index] = original + eps
            plus = evaluate()
            array[index] = original - eps
            minus = evaluate()
            array[index] = original
            values.append((plus - minus) / (2 * eps))
        return values

    compared = []  # (path, analytic, numeric, indices) per checked array
    flat_params = tree.flatten(params)
    flat_grads = {path: _host_copy(g) for path, g in tree.flatten(dparams).items()}
    dx = None if dx is None else _host_copy(dx)
    for path, array in flat_params.items():
        indices = _element_indices(tuple(array.shape), max_elements, host_rng)
        numeric = numeric_derivatives(array, indices, lambda: loss(params, x))
        analytic = [flat_grads[path][index] for index in indices]
        compared.append((path, analytic, numeric, indices))

    if input_grad:  # grad_from_tape has checked dx's shape
        indices = _element_indices(tuple(x.shape), max_elements, host_rng)
        numeric = numeric_derivatives(x, indices, lambda: loss(params, x))
        analytic = [dx[index] for index in indices]
        compared.append((INPUT, analytic, numeric, indices))

    scale = max((_magnitude(a, n).max(initial=0.0) for _, a, n, _ in compared), default=0.0)
    leaves = [_leaf_error(path, a, n, indices, scale) for path, a, n, indices in compared]

    return GradCheckReport(layer=layer, leaves=tuple(leaves), tolerance=tolerance, eps=eps)
