"""Dense: a fully connected layer, y = x W + b."""

from __future__ import annotations

import attrs
import numpy

from ..checks import count
from .base import (
    ShapeError,
    check_entries,
    check_input,
    check_input_dtype,
    host_array,
    register_layer,
)


@register_layer
@attrs.frozen
class Dense:
    """Fully connected layer.

    Shapes: x (N, in) -> y (N, units); params W (in, units), b (units,).

    Forward  y = x W + b
    Backward dW = xᵀ dy,  db = Σₙ dy,  dx = dy Wᵀ
    """

    units: int = attrs.field(converter=lambda n: count(n, "Dense units"))
    use_bias: bool = True

    def output_shape(self, input_shape):
        """(in,) -> (units,); ShapeError for inputs that are not flat."""
        if len(input_shape) != 1:
            raise ShapeError(
                f"{self!r} expects flat inputs (features,) but got {tuple(input_shape)}; "
                "put a Flatten layer before it"
            )
        return (self.units,)

    def _param_shapes(self) -> dict[str, tuple]:
        """The shapes of W (in, units) and b (units,); None: any number of inputs."""
        if self.use_bias:
            return {"W": (None, self.units), "b": (self.units,)}
        return {"W": (None, self.units)}

    def init(self, input_shape, rng, *, xp, dtype):
        """He-uniform W (in, units) in ±sqrt(6 / in), zero b (units,); no state."""
        self.output_shape(input_shape)  # raises a clear error for non-flat inputs
        (fan_in,) = input_shape
        # He-uniform: keeps the variance of ReLU activations constant from layer to layer.
        limit = numpy.sqrt(6.0 / fan_in)  # host
        params = {"W": host_array(xp, rng.uniform(-limit, limit, (fan_in, self.units)), dtype)}
        if self.use_bias:
            params["b"] = xp.zeros((self.units,), dtype=dtype)
        return params, {}

    def apply(self, params, state, x, *, training, rng, xp):
        """y = x W + b: x (N, in) -> y (N, units); the cache is x when training."""
        check_entries(self, "parameter", params, self._param_shapes())
        W = params["W"]  # (in, units)
        check_input(self, x, (W.shape[0],))
        check_input_dtype(self, x, "W", W)
        y = x @ W  # (N, units)
        if self.use_bias:
            y += params["b"]
        return y, state, (x if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """dW = xᵀ dy (in, units), db = Σₙ dy (units,), dx = dy Wᵀ (N, in)."""
        x = cache  # (N, in)
        grads = {"W": x.T @ dy}  # (in, units)
        if self.use_bias:
            grads["b"] = dy.sum(axis=0)  # (units,)
        dx = dy @ params["W"].T if input_grad else None  # (N, in)
        return grads, dx
