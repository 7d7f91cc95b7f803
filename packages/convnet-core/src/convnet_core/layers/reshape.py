"""Flatten: (N, C, H, W) or any (N, ...) -> (N, C*H*W)."""

from __future__ import annotations

import math

import attrs

from .base import register_layer


@register_layer
@attrs.frozen
class Flatten:
    """Flatten every axis but the batch axis, in C order (channels first for NCHW)."""

    def output_shape(self, input_shape):
        """(C, H, W) (or any per-sample shape) -> (C*H*W,)."""
        return (math.prod(input_shape),)

    def init(self, input_shape, rng, *, xp, dtype):
        """No parameters and no state."""
        return {}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        """x (N, C, H, W) -> y (N, C*H*W), a view; the cache is x's shape."""
        y = x.reshape(x.shape[0], math.prod(x.shape[1:]))  # (N, C*H*W), a view
        return y, state, (x.shape if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """dx = dy reshaped back to x's shape (N, C, H, W)."""
        return {}, (dy.reshape(cache) if input_grad else None)
