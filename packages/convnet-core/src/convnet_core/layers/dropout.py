"""Dropout: randomly zero a fraction of the activations while training (inverted dropout)."""

from __future__ import annotations

import attrs

from .base import register_layer


def _check_rate(_instance, _attribute, value):
    if not 0.0 <= value < 1.0:
        raise ValueError(f"Dropout rate must be in [0, 1), got {value}")


@register_layer
@attrs.frozen
class Dropout:
    """Zero each input with probability `rate` while training; identity at inference.

    Shapes: any (N, ...) -> the same. The kept values are scaled by 1 / (1 - rate) so the
    expected output equals the input (inverted dropout): y = x * mask / (1 - rate) with
    mask ~ Bernoulli(1 - rate), drawn with the `rng` given to `apply` (a generator of `xp`,
    so the mask is made on the device). Backward: dx = dy * mask / (1 - rate).
    """

    rate: float = attrs.field(converter=float, validator=_check_rate)

    def output_shape(self, input_shape):
        """Any shape -> the same."""
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        """No parameters and no state."""
        return {}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        """Training: y = x * mask / (1 - rate), mask ~ Bernoulli(1 - rate) drawn with rng;
        inference: y = x. Shapes unchanged.
        """
        if not training:
            return x, state, None
        if self.rate == 0.0:
            return x, state, {"scale": None}  # nothing dropped: dx = dy
        if rng is None:
            raise ValueError(
                f"{self!r} needs a random generator when training: pass rng= to apply "
                "(an int seed or a generator of the array module)"
            )
        keep = 1.0 - self.rate
        dtype = x.dtype.type
        # (N, ...) of 0 or 1 / keep: the mask and the rescaling in one array
        # generators draw float32 or float64 only; a float16 batch gets float32 draws
        draw_dtype = x.dtype if x.dtype.itemsize >= 4 else xp.float32
        scale = (rng.random(x.shape, dtype=draw_dtype) < keep) * dtype(1.0 / keep)
        scale = scale.astype(x.dtype, copy=False)
        return x * scale, state, {"scale": scale}

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """dx = dy * mask / (1 - rate), the mask of the forward pass."""
        if not input_grad:
            return {}, None
        scale = cache["scale"]
        return {}, (dy if scale is None else dy * scale)
