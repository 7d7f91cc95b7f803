"""Conv2D: a 2-D convolution (cross-correlation, as in every framework) by im2col + BLAS."""

from __future__ import annotations

import attrs
import numpy

from ..backend import is_cupy
from ..checks import count, pair
from ..ops import (
    col2im,
    col2im_same_size,
    conv_output_size,
    im2col_padded,
    im2col_same_size,
    keeps_size,
    matmul_long_k,
    same_padding,
    unpad_spatial,
)
from .base import (
    ShapeError,
    check_entries,
    check_input,
    check_input_dtype,
    host_array,
    register_layer,
    require_image_shape,
)


def pair_field(name: str):
    """An attrs converter to a pair of ints (`checks.pair`): 3 -> (3, 3), [3, 5] -> (3, 5);
    ValueError naming `name` ("Conv2D stride") for what is not whole numbers."""
    return lambda value: pair(value, name)


def _padding(value):
    """'same', 'valid', an int, or a pair of ints (rows, columns), kept as one int when
    both are equal."""
    if isinstance(value, str) and value in ("same", "valid"):
        return value
    try:
        rows, columns = pair(value, "Conv2D padding")
    except ValueError:
        raise ValueError(
            f"Conv2D padding must be 'same', 'valid', a whole number or a pair of them, "
            f"got {value!r}"
        ) from None
    if min(rows, columns) < 0:
        raise ValueError(f"Conv2D padding must not be negative, got {value!r}")
    return rows if rows == columns else (rows, columns)


def positive_pair(instance, attribute, value):
    """An attrs validator: both numbers of a pair (or None, for a default) are >= 1."""
    if value is not None and min(value) < 1:
        raise ValueError(
            f"{type(instance).__name__} {attribute.name} must be positive, got {value!r}"
        )


@register_layer
@attrs.frozen
class Conv2D:
    """2-D convolution over NCHW batches.

    Shapes: x (N, C, H, W) -> y (N, filters, Ho, Wo); params W (filters, C, kh, kw), b (filters,).
    Ho = (H + pad_top + pad_bottom - kh) // stride_h + 1 (likewise Wo). "same" pads so that
    Ho = ceil(H / stride) (the odd pixel at the bottom/right), "valid" does not pad, an int
    pads every side by that much.

    Forward   y[n, o] = b[o] + Σ_c,i,j W[o, c, i, j] x_pad[n, c, h*s + i, w*s + j]
              computed as one matmul  Y (O, N*Ho*Wo) = W2d (O, C*kh*kw) @ cols (C*kh*kw, N*Ho*Wo)
    Backward  dW2d = dY @ colsᵀ,  db = Σ dY over (n, h, w),
              dcols = W2dᵀ @ dY, then col2im adds the columns back onto the input pixels.
    """

    filters: int = attrs.field(converter=lambda n: count(n, "Conv2D filters"))
    kernel_size: tuple = attrs.field(
        default=(3, 3), converter=pair_field("Conv2D kernel_size"), validator=positive_pair
    )
    stride: tuple = attrs.field(
        default=1, converter=pair_field("Conv2D stride"), validator=positive_pair
    )
    padding: object = attrs.field(default="same", converter=_padding)
    use_bias: bool = True

    def pads(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) padding for an input of height x width."""
        kh, kw = self.kernel_size
        sh, sw = self.stride
        if self.padding == "same":
            return (*same_padding(height, kh, sh), *same_padding(width, kw, sw))
        if self.padding == "valid":
            return (0, 0, 0, 0)
        ph, pw = self.padding if isinstance(self.padding, tuple) else (self.padding,) * 2
        return (ph, ph, pw, pw)

    def _param_shapes(self) -> dict[str, tuple]:
        """The shapes of W (filters, C, kh, kw) and b (filters,); None: any channel count."""
        kernel = (self.filters, None, *self.kernel_size)
        return {"W": kernel, "b": (self.filters,)} if self.use_bias else {"W": kernel}

    def _shifts_planes(self, x_shape, pads, xp) -> bool:
        """Whether im2col/col2im run as flat shifts of each channel (NumPy, size-keeping conv)."""
        return not is_cupy(xp) and keeps_size(x_shape[2:], self.kernel_size, self.stride, pads)

    def output_shape(self, input_shape):
        """(C, H, W) -> (filters, Ho, Wo), Ho = (H + pads - kh) // sh + 1."""
        _, h, w = require_image_shape(self, input_shape)
        top, bottom, left, right = self.pads(h, w)
        kh, kw = self.kernel_size
        if h + top + bottom < kh or w + left + right < kw:
            raise ShapeError(
                f"{self!r}: the input {tuple(input_shape)} (padded to "
                f"{h + top + bottom}x{w + left + right}) is smaller than the kernel {kh}x{kw}"
            )
        ho = conv_output_size(h, kh, self.stride[0], top + bottom)
        wo = conv_output_size(w, kw, self.stride[1], left + right)
        return (self.filters, ho, wo)

    def init(self, input_shape, rng, *, xp, dtype):
        """He-normal weights (std = sqrt(2 / fan_in), fan_in = C*kh*kw), zero bias."""
        self.output_shape(input_shape)
        channels = input_shape[0]
        kh, kw = self.kernel_size
        fan_in = channels * kh * kw
        std = numpy.sqrt(2.0 / fan_in)  # host
        w = rng.normal(0.0, std, (self.filters, channels, kh, kw))  # host
        params = {"W": host_array(xp, w, dtype)}
        if self.use_bias:
            params["b"] = xp.zeros((self.filters,), dtype=dtype)
        return params, {}

    def apply(self, params, state, x, *, training, rng, xp):
        """x (N, C, H, W) -> y (N, O, Ho, Wo) as one matmul W2d (O, C*kh*kw) @ cols.

        The cache holds cols (C*kh*kw, N*Ho*Wo), the input shape and the pads. On NumPy a
        size-keeping convolution (stride 1, Ho = H, Wo = W) builds cols by whole-plane
        shifted copies (`ops.im2col_same_size`): the same numbers, without the padded copy.
        """
        check_entries(self, "parameter", params, self._param_shapes())
        W = params["W"]  # (O, C, kh, kw)
        out_channels, in_channels = W.shape[:2]
        check_input(self, x, (in_channels, None, None))
        check_input_dtype(self, x, "W", W)
        n = x.shape[0]
        _, ho, wo = self.output_shape(x.shape[1:])
        pads = self.pads(*x.shape[2:])
        if self._shifts_planes(x.shape, pads, xp):
            cols = im2col_same_size(x, self.kernel_size, pads, xp=xp)  # (C*kh*kw, N*H*W)
        else:  # (C*kh*kw, N*Ho*Wo)
            cols = im2col_padded(x, pads, self.kernel_size, self.stride, xp=xp)
        y = W.reshape(out_channels, -1) @ cols  # (O, N*Ho*Wo)
        if self.use_bias:
            y += params["b"][:, None]
        y = y.reshape(out_channels, n, ho, wo).transpose(1, 0, 2, 3)  # (N, O, Ho, Wo) view
        cache = (cols, x.shape, pads) if training else None
        return y, state, cache

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """dW = dY colsᵀ (O, C, kh, kw), db = Σ dY (O,), dx = col2im(W2dᵀ dY) (N, C, H, W)."""
        cols, x_shape, pads = cache
        W = params["W"]  # (O, C, kh, kw)
        out_channels = W.shape[0]
        # (N, O, Ho, Wo) -> (O, N*Ho*Wo); free when dy is channel-major in memory
        dy2d = dy.transpose(1, 0, 2, 3).reshape(out_channels, -1)
        # dW2d = dY @ colsᵀ, computed as (cols @ dYᵀ)ᵀ: the same product, but BLAS runs the
        # long N*Ho*Wo reduction faster with this operand order (measured ~1.5x)
        dW2d = matmul_long_k(cols, dy2d.T, xp=xp).T  # (O, C*kh*kw)
        grads = {"W": dW2d.reshape(W.shape)}  # (O, C, kh, kw)
        if self.use_bias:
            # a row sum as a matrix-vector product: BLAS runs it on every thread, about 3x
            # faster than dy2d.sum(axis=1) for the README model
            grads["b"] = dy2d @ xp.ones(dy2d.shape[1], dtype=dy2d.dtype)  # (O,)
        dx = None
        if input_grad:
            dcols = W.reshape(out_channels, -1).T @ dy2d  # (C*kh*kw, N*Ho*Wo)
            if self._shifts_planes(x_shape, pads, xp):
                dx = col2im_same_size(dcols, x_shape, self.kernel_size, pads, xp=xp)
            else:
                n, c, h, w = x_shape
                top, bottom, left, right = pads
                padded_shape = (n, c, h + top + bottom, w + left + right)
                dx_padded = col2im(dcols, padded_shape, self.kernel_size, self.stride, xp=xp)
                dx = unpad_spatial(dx_padded, pads)  # (N, C, H, W)
        return grads, dx
