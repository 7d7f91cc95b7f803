"""Pooling: MaxPool2D, AvgPool2D (windows of any size and stride) and GlobalAvgPool2D.

The windows are read as kh*kw strided views of the input, one per offset inside the
window (`ops.pool_windows`): the pool is then an element-wise max or sum over a handful of
whole-batch arrays. (A reshape to (N, C, Ho, kh, Wo, kw) followed by `.max(axis=(3, 5))`
reads the same numbers but NumPy reduces over such small strided axes about 20 times more
slowly.) When the windows tile the input (stride equal to the pool size), every pixel lies
in one view at most, so the backward pass writes each view once instead of accumulating.
"""

from __future__ import annotations

import attrs

from ..ops import conv_output_size, pool_windows
from .base import ShapeError, check_input, register_layer
from .conv import _pair


def _optional_pair(value):
    return None if value is None else _pair(value)


def _positive(_instance, attribute, value):
    if value is not None and min(value) < 1:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


class _Pool2D:
    """What MaxPool2D and AvgPool2D share: window geometry and shape checks."""

    @property
    def strides(self) -> tuple[int, int]:
        """The stride, which defaults to the pool size (non-overlapping windows)."""
        return self.pool_size if self.stride is None else self.stride

    @property
    def tiles(self) -> bool:
        """True when windows do not overlap (each pixel is read by one window at most)."""
        return all(s >= k for s, k in zip(self.strides, self.pool_size, strict=True))

    def output_shape(self, input_shape):
        """(C, H, W) -> (C, Ho, Wo), Ho = (H - kh) // sh + 1 (no padding)."""
        if len(input_shape) != 3:
            raise ShapeError(
                f"{self!r} expects inputs of shape (N, C, H, W) but got per-sample shape "
                f"{tuple(input_shape)}"
            )
        c, h, w = input_shape
        kh, kw = self.pool_size
        if h < kh or w < kw:
            raise ShapeError(
                f"{self!r}: the input {tuple(input_shape)} is smaller than the pool {kh}x{kw}"
            )
        sh, sw = self.strides
        return (c, conv_output_size(h, kh, sh, 0), conv_output_size(w, kw, sw, 0))

    def init(self, input_shape, rng, *, xp, dtype):
        """No parameters and no state (checks the input shape)."""
        self.output_shape(input_shape)
        return {}, {}

    def _check(self, x):
        check_input(self, x, (None, None, None))
        self.output_shape(x.shape[1:])

    def _input_grad_buffer(self, x_shape, out_shape, dtype, xp):
        """dx (N, C, H, W), channel-major in memory like the rest of the network.

        Zero-filled unless the windows tile the input exactly (then every pixel is written).
        """
        n, c, h, w = x_shape
        _, _, ho, wo = out_shape
        exact = self.tiles and self.strides == self.pool_size
        exact = exact and ho * self.pool_size[0] == h and wo * self.pool_size[1] == w
        make = xp.empty if exact else xp.zeros
        return make((c, n, h, w), dtype=dtype).transpose(1, 0, 2, 3)


@register_layer
@attrs.frozen
class MaxPool2D(_Pool2D):
    """Max over each pool_size window, moving by stride (default: the pool size).

    Shapes: (N, C, H, W) -> (N, C, Ho, Wo), Ho = (H - kh) // sh + 1 (no padding).
    Backward: each output's gradient goes to the one input that gave the max; on ties to
    the first in row-major order within the window, as PyTorch does.
    """

    pool_size: tuple = attrs.field(default=(2, 2), converter=_pair, validator=_positive)
    stride: tuple | None = attrs.field(default=None, converter=_optional_pair, validator=_positive)

    def apply(self, params, state, x, *, training, rng, xp):
        """x (N, C, H, W) -> y (N, C, Ho, Wo), the max of each window.

        When training, the cache also holds `first_max` (N, C, Ho, Wo), uint8 (int32 for
        windows of over 255 pixels): the offset k (row-major within the window) of each
        window's first maximum, found while taking the max so the backward pass needs no
        comparison with x.
        """
        self._check(x)
        views = pool_windows(x, self.pool_size, self.strides)  # kh*kw views (N, C, Ho, Wo)
        y = views[0].copy(order="K")  # keeps the input's memory layout
        if not training:
            for view in views[1:]:
                xp.maximum(y, view, out=y)
            return y, state, None
        index_type = xp.uint8 if len(views) <= 256 else xp.int32
        first_max = xp.zeros_like(y, dtype=index_type)  # offset 0 until a larger one comes
        for k, view in enumerate(views[1:], start=1):
            newer = view > y  # strictly larger: on ties the earlier offset stays
            xp.maximum(y, view, out=y)
            # k exceeds every offset recorded so far, so the max writes k exactly where newer
            xp.maximum(first_max, newer.view(xp.uint8) * index_type(k), out=first_max)
        return y, state, (x.shape, first_max)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """dx (N, C, H, W): each dy goes to its window's (first) maximum, 0 elsewhere."""
        if not input_grad:
            return {}, None
        x_shape, first_max = cache
        dx = self._input_grad_buffer(x_shape, first_max.shape, dy.dtype, xp)
        for k, dx_view in enumerate(pool_windows(dx, self.pool_size, self.strides)):
            winner = first_max == k  # this offset holds the window's first max
            if self.tiles:
                xp.multiply(winner, dy, out=dx_view)
            else:
                dx_view += winner * dy
        return {}, dx


@register_layer
@attrs.frozen
class AvgPool2D(_Pool2D):
    """Mean over each pool_size window, moving by stride (default: the pool size).

    Shapes: (N, C, H, W) -> (N, C, Ho, Wo). Backward: each input of a window receives
    dy / (kh*kw).
    """

    pool_size: tuple = attrs.field(default=(2, 2), converter=_pair, validator=_positive)
    stride: tuple | None = attrs.field(default=None, converter=_optional_pair, validator=_positive)

    def apply(self, params, state, x, *, training, rng, xp):
        """x (N, C, H, W) -> y (N, C, Ho, Wo), the mean of each window."""
        self._check(x)
        views = pool_windows(x, self.pool_size, self.strides)
        y = views[0].copy(order="K")  # keeps the input's memory layout
        for view in views[1:]:
            y += view
        y *= y.dtype.type(1.0 / len(views))
        return y, state, ((x.shape, y.shape) if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """dx (N, C, H, W): every input of a window receives dy / (kh*kw)."""
        if not input_grad:
            return {}, None
        x_shape, y_shape = cache
        share = dy * dy.dtype.type(1.0 / (self.pool_size[0] * self.pool_size[1]))
        dx = self._input_grad_buffer(x_shape, y_shape, dy.dtype, xp)
        for dx_view in pool_windows(dx, self.pool_size, self.strides):
            if self.tiles:
                dx_view[...] = share
            else:
                dx_view += share
        return {}, dx


@register_layer
@attrs.frozen
class GlobalAvgPool2D:
    """Mean over the whole H x W plane of each channel: (N, C, H, W) -> (N, C).

    Backward: every pixel of channel c receives dy[n, c] / (H*W).
    """

    def output_shape(self, input_shape):
        """(C, H, W) -> (C,)."""
        if len(input_shape) != 3:
            raise ShapeError(
                f"{self!r} expects inputs of shape (N, C, H, W) but got per-sample shape "
                f"{tuple(input_shape)}"
            )
        return (input_shape[0],)

    def init(self, input_shape, rng, *, xp, dtype):
        """No parameters and no state."""
        self.output_shape(input_shape)
        return {}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        """x (N, C, H, W) -> y (N, C), the mean over H and W."""
        check_input(self, x, (None, None, None))
        y = x.mean(axis=(2, 3))  # (N, C)
        return y, state, (x.shape if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """dx (N, C, H, W) = dy[n, c] / (H*W) at every pixel."""
        if not input_grad:
            return {}, None
        n, c, h, w = cache
        share = dy * dy.dtype.type(1.0 / (h * w))  # (N, C)
        return {}, xp.broadcast_to(share[:, :, None, None], (n, c, h, w)).copy()
