"""Pooling: MaxPool2D, AvgPool2D (windows of any size and stride) and GlobalAvgPool2D.

The windows are read as kh*kw strided views of the input, one per offset inside the
window (`ops.pool_windows`): the pool is then an element-wise max or sum over a handful of
whole-batch arrays. (A reshape to (N, C, Ho, kh, Wo, kw) followed by `.max(axis=(3, 5))`
reads the same numbers but NumPy reduces over such small strided axes about 20 times more
slowly.) When the windows tile the input (stride equal to the pool size), every pixel lies
in one view at most, so the backward pass writes each view once instead of accumulating.

MaxPool2D with windows that tile the input exactly (stride equal to the pool size, the
usual case) takes the max in two 1-D steps: along each row of every tile, then down the
tile's rows. Each step reads views whose pixels NumPy walks as one long strided run, and
for 2x2 tiles it is 2 + 2 element-wise operations instead of 3 on four short-rowed views.

On CuPy (float32, float64) MaxPool2D runs one kernel each way instead
(`cuda_kernels.maxpool_forward` / `maxpool_backward`), whose cache is the general one:
the window offset of each first maximum.
"""

from __future__ import annotations

import attrs

from .. import cuda_kernels
from ..backend import is_cupy
from ..ops import conv_output_size, pool_windows
from .base import ShapeError, check_input, register_layer, require_image_shape
from .conv import pair_field, positive_pair


def _in_layout_of(reference, a, xp):
    """a, copied into reference's memory layout (axis order) unless it already has it.

    Element-wise work on arrays of different layouts runs with strided inner loops, several
    times slower than on matching ones (a dy coming back through Flatten is C-ordered while
    the pool's cache follows the channel-major layout of the forward pass).
    """
    if _axis_order(a) == _axis_order(reference):
        return a
    out = xp.empty_like(reference, dtype=a.dtype)  # same shape and axis order as reference
    out[...] = a
    return out


def _axis_order(a):
    """The axes of a from the largest stride to the smallest (its memory layout)."""
    return sorted(range(a.ndim), key=lambda axis: -a.strides[axis])


def _optional_pair_field(name: str):
    """`pair_field(name)`, with None (the default stride: the pool size) kept."""
    convert = pair_field(name)
    return lambda value: None if value is None else convert(value)


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
        c, h, w = require_image_shape(self, input_shape)
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


def _first_max(views, xp, *, with_index, with_nan):
    """(top, index): the element-wise max of views (same-shape arrays) and, when with_index,
    the position k in `views` of the view that holds it (uint8, or int32 beyond 256 views;
    None otherwise), by PyTorch's rule: a view takes over where it is strictly larger (on
    ties the earlier view keeps it), or NaN (`_takes_over`). top is NaN wherever a view
    holds NaN; index is right there only with `with_nan`, which costs two more operations per
    view."""
    index_type = xp.uint8 if len(views) <= 256 else xp.int32
    if len(views) == 1:
        index = xp.zeros(views[0].shape, dtype=index_type) if with_index else None
        return views[0].copy(order="K"), index
    index = None
    if with_index:
        newer = _takes_over(views[1], views[0], with_nan=with_nan)
        index = newer.view(xp.uint8).astype(index_type, copy=False)
    top = xp.maximum(views[0], views[1])  # a new array, in the views' memory layout
    for k, view in enumerate(views[2:], start=2):
        if with_index:
            newer = _takes_over(view, top, with_nan=with_nan)
        xp.maximum(top, view, out=top)
        if with_index:
            # k exceeds every index recorded so far, so the max writes k exactly where newer
            xp.maximum(index, newer.view(xp.uint8) * index_type(k), out=index)
    return top, index


def _takes_over(view, top, *, with_nan):
    """Where view becomes the maximum after top, by PyTorch's `val > max || isnan(val)`:
    strictly larger, or (when with_nan) NaN, so a NaN takes over from a number and from an
    earlier NaN, and nothing but a NaN from a NaN. A boolean array."""
    newer = view > top
    if with_nan:
        newer |= view != view
    return newer


def _holds_nan(y, xp):
    """Whether y holds NaN, read on the host (one max over y): not for CuPy arrays, whose
    read would make the host wait for the GPU."""
    return y.size > 0 and bool(xp.isnan(y.max()))


def _send_to_first_max(d, index, targets, xp):
    """targets[k] = d where index == k, else 0: the backward pass of `_first_max`.

    targets are writable views shaped like d (they must not overlap).
    """
    if len(targets) == 2:  # index is 0 or 1: one product, and the rest by subtraction
        xp.multiply(d, index.view(xp.bool_), out=targets[1])
        xp.subtract(d, targets[1], out=targets[0])
        return
    for k, target in enumerate(targets):
        winner = index == k  # view k holds the first max here
        xp.multiply(winner, d, out=target)


@register_layer
@attrs.frozen
class MaxPool2D(_Pool2D):
    """Max over each pool_size window, moving by stride (default: the pool size).

    Shapes: (N, C, H, W) -> (N, C, Ho, Wo), Ho = (H - kh) // sh + 1 (no padding).
    Backward: each output's gradient goes to the one input that gave the max; on ties to
    the first in row-major order within the window, and in a window holding NaN (whose max
    is NaN) to the last NaN, as PyTorch does.
    """

    pool_size: tuple = attrs.field(
        default=(2, 2), converter=pair_field("MaxPool2D pool_size"), validator=positive_pair
    )
    stride: tuple | None = attrs.field(
        default=None, converter=_optional_pair_field("MaxPool2D stride"), validator=positive_pair
    )

    @property
    def _in_two_steps(self) -> bool:
        """True when the windows tile the input exactly: the max splits into rows, then columns."""
        return self.strides == self.pool_size

    def _tile_columns(self, x):
        """The kw views (N, C, Ho*kh, Wo) of x (N, C, H, W): column j of every tile row.

        Rows and columns beyond the last whole tile are left out, as the pooling drops them.
        """
        kh, kw = self.pool_size
        ho, wo = x.shape[2] // kh, x.shape[3] // kw
        return [x[:, :, : ho * kh, j : wo * kw : kw] for j in range(kw)]

    def _tile_rows(self, rows):
        """The kh views (N, C, Ho, Wo) of rows (N, C, Ho*kh, Wo): row i of every tile."""
        kh = self.pool_size[0]
        return [rows[:, :, i::kh] for i in range(kh)]

    def apply(self, params, state, x, *, training, rng, xp):
        """x (N, C, H, W) -> y (N, C, Ho, Wo), the max of each window.

        When training, the cache also records where each window's first maximum was
        (uint8 positions; int32 beyond 256), so the backward pass needs no comparison with
        x: for tiling windows `column` (N, C, Ho*kh, Wo), the winning column within each
        tile row, and `row` (N, C, Ho, Wo), the row whose max won; otherwise, and always on
        a GPU, `first_max` (N, C, Ho, Wo), the offset k (row-major within the window).
        """
        self._check(x)
        if is_cupy(xp) and cuda_kernels.maxpool_kernels_take(x):  # one kernel
            y, first_max = cuda_kernels.maxpool_forward(x, self.pool_size, self.strides)
            return y, state, ((x.shape, first_max) if training else None)
        # The positions of the maxima follow PyTorch for NaN too (with_nan) on CuPy, where
        # the values cannot be looked at without a wait; with NumPy only when y holds NaN.
        with_nan = is_cupy(xp)
        y, positions = self._max(x, xp, with_index=training, with_nan=with_nan)
        if training and not with_nan and _holds_nan(y, xp):
            y, positions = self._max(x, xp, with_index=True, with_nan=True)
        return y, state, ((x.shape, *positions) if training else None)

    def _max(self, x, xp, *, with_index, with_nan):
        """(y, positions): the max of each window and, when with_index, where it was (the
        cache after x's shape, see `apply`); `_first_max` says what with_nan does."""
        if self._in_two_steps:
            # the max along each tile row (N, C, Ho*kh, Wo), then down each tile (N, C, Ho, Wo)
            along = {"with_index": with_index, "with_nan": with_nan}
            row_max, column = _first_max(self._tile_columns(x), xp, **along)
            y, row = _first_max(self._tile_rows(row_max), xp, **along)
            return y, (column, row)
        views = pool_windows(x, self.pool_size, self.strides)  # kh*kw views (N, C, Ho, Wo)
        y, first_max = _first_max(views, xp, with_index=with_index, with_nan=with_nan)
        return y, (first_max,)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """dx (N, C, H, W): each dy goes to its window's (first) maximum, 0 elsewhere."""
        if not input_grad:
            return {}, None
        if len(cache) == 3:  # the two-step forward pass's (x_shape, column, row)
            x_shape, column, row = cache
            dy = _in_layout_of(row, dy, xp)
            # dy down to the winning row of each tile, then along it to the winning column
            d_rows = xp.empty_like(column, dtype=dy.dtype)  # (N, C, Ho*kh, Wo)
            _send_to_first_max(dy, row, self._tile_rows(d_rows), xp)
            dx = self._input_grad_buffer(x_shape, dy.shape, dy.dtype, xp)
            _send_to_first_max(d_rows, column, self._tile_columns(dx), xp)
            return {}, dx
        x_shape, first_max = cache
        if is_cupy(xp) and cuda_kernels.maxpool_kernels_take(dy):  # one kernel
            dx = cuda_kernels.maxpool_backward(dy, first_max, x_shape, self.pool_size, self.strides)
            return {}, dx
        dy = _in_layout_of(first_max, dy, xp)
        dx = self._input_grad_buffer(x_shape, first_max.shape, dy.dtype, xp)
        dx_views = pool_windows(dx, self.pool_size, self.strides)
        if self.tiles:  # each pixel in one window at most: write each view once
            _send_to_first_max(dy, first_max, dx_views, xp)
        else:  # overlapping windows: a pixel collects from every window it won
            for k, dx_view in enumerate(dx_views):
                winner = first_max == k
                dx_view += winner * dy
        return {}, dx


@register_layer
@attrs.frozen
class AvgPool2D(_Pool2D):
    """Mean over each pool_size window, moving by stride (default: the pool size).

    Shapes: (N, C, H, W) -> (N, C, Ho, Wo). Backward: each input of a window receives
    dy / (kh*kw).
    """

    pool_size: tuple = attrs.field(
        default=(2, 2), converter=pair_field("AvgPool2D pool_size"), validator=positive_pair
    )
    stride: tuple | None = attrs.field(
        default=None, converter=_optional_pair_field("AvgPool2D stride"), validator=positive_pair
    )

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
        dx = self._input_grad_buffer(x_shape, y_shape, dy.dtype, xp)
        dx_views = pool_windows(dx, self.pool_size, self.strides)
        scale = dy.dtype.type(1.0 / (self.pool_size[0] * self.pool_size[1]))
        # dy / (kh*kw), laid out in memory like dx, whatever dy's layout
        share = xp.multiply(dy, scale, out=xp.empty_like(dx_views[0]))
        for dx_view in dx_views:
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
        require_image_shape(self, input_shape)
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
