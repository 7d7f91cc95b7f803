"""The kernels behind Conv2D and the pooling layers: padding, im2col, col2im, pool windows.

Every function takes the array module `xp` (numpy or cupy) and works on NCHW batches.

Memory layout. A convolution is one matrix product

    Y (O, N*Ho*Wo) = W (O, C*kh*kw) @ cols (C*kh*kw, N*Ho*Wo)

whose result is laid out channel-major: (O, N, Ho, Wo) in memory. The layers hand it on
as the NCHW view `Y.reshape(O, N, Ho, Wo).transpose(1, 0, 2, 3)` instead of copying it
into NCHW order: element-wise layers keep that layout, pooling reads it through strided
views, the next im2col copies from it with contiguous inner rows, and the backward pass
gets its `dy` back in the same order, so `dy.transpose(1, 0, 2, 3).reshape(O, -1)` is free.
Every array is still an ordinary (N, C, H, W) array: only its strides differ, and any
input layout gives the same numbers (a C-contiguous input just costs one more copy).

Same-size convolutions. When the stride is 1 and the padding keeps the size (Ho = H,
Wo = W, as "same" does), offset (i, j) of every window reads the input shifted by
s = (i - top)*W + (j - left) places once the whole (C, N, H, W) batch is flattened to one
row of N*H*W pixels per channel. `im2col_same_size` and `col2im_same_size` use that on
NumPy: one long copy (or add) per offset over each channel's row, instead of one short one
per output row (rows of W pixels, which NumPy runs several times more slowly), then zeros
where the shift read outside the image: the |i - top| rows at the top or bottom of each
plane, which the flat shift takes from the neighbouring plane, and the |j - left| columns
that wrap round from the neighbouring row. The numbers are those of
`im2col(pad_spatial(...))` and `unpad_spatial(col2im(...))`.
"""

from __future__ import annotations

from typing import Any

from . import cuda_kernels
from .backend import is_cupy

__all__ = [
    "col2im",
    "col2im_same_size",
    "conv_output_size",
    "im2col",
    "im2col_same_size",
    "keeps_size",
    "matmul_long_k",
    "pad_spatial",
    "pool_windows",
    "same_padding",
    "unpad_spatial",
]


def conv_output_size(size: int, kernel: int, stride: int, pad_total: int) -> int:
    """Output length of a window of `kernel` sliding with `stride` over `size + pad_total`."""
    return (size + pad_total - kernel) // stride + 1


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding that gives ceil(size / stride) outputs ("same" padding).

    The odd pixel, when the total is odd, goes after (bottom/right), as in PyTorch and
    TensorFlow.
    """
    out = -(-size // stride)  # ceil division
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_spatial(x: Any, pads: tuple[int, int, int, int], *, xp: Any) -> Any:
    """Zero-pad H and W of x (N, C, H, W) by pads = (top, bottom, left, right).

    Returns (N, C, H + top + bottom, W + left + right), allocated channel-major (C, N, H, W)
    in memory like the layers' outputs (see the module docstring); x itself when no padding.
    """
    top, bottom, left, right = pads
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    padded = xp.zeros((c, n, h + top + bottom, w + left + right), dtype=x.dtype)
    padded = padded.transpose(1, 0, 2, 3)  # (N, C, Hp, Wp) view
    padded[:, :, top : top + h, left : left + w] = x
    return padded


def unpad_spatial(x: Any, pads: tuple[int, int, int, int]) -> Any:
    """The inverse crop of `pad_spatial`: a view of x without its padded border.

    x (N, C, Hp, Wp) with pads = (top, bottom, left, right) -> (N, C, Hp - top - bottom,
    Wp - left - right), no copy.
    """
    top, bottom, left, right = pads
    _, _, h, w = x.shape
    return x[:, :, top : h - bottom, left : w - right]


def im2col(x_padded: Any, kernel: tuple[int, int], stride: tuple[int, int], *, xp: Any) -> Any:
    """Unfold every kernel-sized window of x_padded (N, C, Hp, Wp) into a column.

    Returns cols (C*kh*kw, N*Ho*Wo) with cols[(c, i, j), (n, h, w)] =
    x_padded[n, c, h*sh + i, w*sw + j]: the convolution is then `W2d @ cols`.

    The windows are a strided view (C, kh, kw, N, Ho, Wo) of the input (no copy); one copy
    makes it contiguous. Its inner rows (Wo) are contiguous in the input when sw == 1.
    """
    kh, kw = kernel
    sh, sw = stride
    n, c, hp, wp = x_padded.shape
    ho = conv_output_size(hp, kh, sh, 0)
    wo = conv_output_size(wp, kw, sw, 0)
    s_n, s_c, s_h, s_w = x_padded.strides  # bytes
    windows = xp.lib.stride_tricks.as_strided(
        x_padded,
        shape=(c, kh, kw, n, ho, wo),
        strides=(s_c, s_h, s_w, s_n, s_h * sh, s_w * sw),
    )  # (C, kh, kw, N, Ho, Wo), a view
    return xp.ascontiguousarray(windows).reshape(c * kh * kw, n * ho * wo)


def im2col_padded(
    x: Any,
    pads: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    *,
    xp: Any,
) -> Any:
    """`im2col(pad_spatial(x, pads), kernel, stride)`: x (N, C, H, W) -> cols (C*kh*kw,
    N*Ho*Wo). On CuPy one gather kernel reads the padding as zeros instead of writing a
    padded copy (`cuda_kernels.im2col_gather`); this is its reference."""
    if is_cupy(xp) and cuda_kernels.im2col_kernel_takes(x):
        return cuda_kernels.im2col_gather(x, kernel, stride, pads)
    return im2col(pad_spatial(x, pads, xp=xp), kernel, stride, xp=xp)


def col2im(
    dcols: Any,
    padded_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    *,
    xp: Any,
) -> Any:
    """The adjoint of `im2col`: add every column back onto the pixels it was read from.

    dcols (C*kh*kw, N*Ho*Wo) -> dx_padded (N, C, Hp, Wp) (channel-major in memory).
    One strided add per kernel offset (i, j): kh*kw adds of a whole (C, N, Ho, Wo) block,
    so no Python loop over pixels or samples.
    """
    if is_cupy(xp):  # one gather kernel on a GPU; this loop is its reference
        return cuda_kernels.col2im_on_gpu(dcols, padded_shape, kernel, stride)
    n, c, hp, wp = padded_shape
    kh, kw = kernel
    sh, sw = stride
    ho = conv_output_size(hp, kh, sh, 0)
    wo = conv_output_size(wp, kw, sw, 0)
    blocks = dcols.reshape(c, kh, kw, n, ho, wo)
    dx = xp.zeros((c, n, hp, wp), dtype=dcols.dtype)  # (C, N, Hp, Wp)
    for i in range(kh):
        for j in range(kw):
            # the pixels that offset (i, j) of every window read: rows i, i+sh, ...
            dx[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] += blocks[
                :, i, j
            ]
    return dx.transpose(1, 0, 2, 3)  # (N, C, Hp, Wp) view


def keeps_size(
    in_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, int, int, int],
) -> bool:
    """True when a convolution's output is as large as its input: stride 1, Ho = H, Wo = W."""
    h, w = in_hw
    kh, kw = kernel
    top, bottom, left, right = pads
    return (
        tuple(stride) == (1, 1)
        and conv_output_size(h, kh, 1, top + bottom) == h
        and conv_output_size(w, kw, 1, left + right) == w
    )


def _shifted_slices(length: int, shift: int) -> tuple[slice, slice]:
    """(to, from): slices of a row of `length` with row[to] paired with row[from] = p + shift.

    The first or last |shift| places of `to` have no partner inside the row and are left out.
    """
    shift = max(-length, min(shift, length))  # a shift past the row pairs nothing
    if shift >= 0:
        return slice(0, length - shift), slice(shift, length)
    return slice(-shift, length), slice(0, length + shift)


def _zero_outside(planes: Any, di: int, dj: int) -> None:
    """Zero, in place, the pixels p of planes (..., H, W) whose p + (di, dj) leaves the plane.

    These are the entries a flat shift by di*W + dj reads from a neighbouring plane (the
    first -di or last di rows) or from a neighbouring row (the first -dj or last dj columns).
    """
    height, width = planes.shape[-2:]
    if di < 0:
        planes[..., : min(-di, height), :] = 0
    elif di > 0:
        planes[..., max(height - di, 0) :, :] = 0
    if dj < 0:
        planes[..., : min(-dj, width)] = 0
    elif dj > 0:
        planes[..., max(width - dj, 0) :] = 0


def im2col_same_size(
    x: Any, kernel: tuple[int, int], pads: tuple[int, int, int, int], *, xp: Any
) -> Any:
    """`im2col(pad_spatial(x, pads), kernel, (1, 1))` for a size-keeping convolution.

    x (N, C, H, W) -> cols (C*kh*kw, N*H*W), requires `keeps_size`. Each kernel offset is
    one shifted copy of each channel's flattened pixels (see the module docstring); the
    padding is never materialised.
    """
    n, c, h, w = x.shape
    kh, kw = kernel
    top, _, left, _ = pads
    length = n * h * w
    rows = x.transpose(1, 0, 2, 3).reshape(c, length)  # (C, N*H*W), free if channel-major
    cols = xp.empty((c, kh, kw, length), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            to, source = _shifted_slices(length, (i - top) * w + (j - left))
            block = cols[:, i, j]  # (C, N*H*W), a view
            block[:, to] = rows[:, source]
            # what the shift read from outside the image, and the places it did not reach
            _zero_outside(block.reshape(c, n, h, w), i - top, j - left)
    return cols.reshape(c * kh * kw, length)


def col2im_same_size(
    dcols: Any,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    pads: tuple[int, int, int, int],
    *,
    xp: Any,
) -> Any:
    """`unpad_spatial(col2im(dcols, ...), pads)` for a size-keeping convolution.

    dcols (C*kh*kw, N*H*W) -> dx (N, C, H, W) (channel-major in memory); requires
    `keeps_size`. One shifted add of each channel's flattened pixels per kernel offset.
    dcols is used as scratch: the entries that fall outside the image are zeroed in place.
    """
    n, c, h, w = x_shape
    kh, kw = kernel
    top, _, left, _ = pads
    length = n * h * w
    blocks = dcols.reshape(c, kh, kw, length)
    # offset (top, left) reads the pixels unshifted: it starts the sum
    dx = blocks[:, top, left].copy()  # (C, N*H*W)
    for i in range(kh):
        for j in range(kw):
            if (i, j) == (top, left):
                continue
            to, source = _shifted_slices(length, (i - top) * w + (j - left))
            block = blocks[:, i, j]  # (C, N*H*W), a view
            _zero_outside(block.reshape(c, n, h, w), i - top, j - left)
            dx[:, source] += block[:, to]
    return dx.reshape(c, n, h, w).transpose(1, 0, 2, 3)  # (N, C, H, W) view


# The most multiply-adds per piece in `matmul_long_k`; products up to this size run
# through OpenBLAS's small-matrix kernels on AVX-512 Intel CPUs (no packing), and larger
# ones through its general kernels, which are slow for a tiny output.
_SMALL_PRODUCT = 1_000_000
_TINY_OUTPUT = 256  # elements of the (M, N) result below which pieces pay


def matmul_long_k(a: Any, b: Any, *, xp: Any) -> Any:
    """a (M, K) @ b (K, N) -> (M, N), as a sum over pieces of K when K is long and M*N tiny.

    This is the shape of a convolution's weight gradient with few channels: dW2d for the
    README model's first layer at batch 64 is (9, 50176) @ (50176, 8), 7.2 MFLOP. With b
    the transposed view that `Conv2D.grad` passes, OpenBLAS (one thread, a Xeon with
    AVX-512) takes about 0.34 ms for it whole, 21 GFLOP/s, and 0.14 ms, 51 GFLOP/s, in
    pieces of up to a million multiply-adds; from M*N = 512 up the pieces lose, so larger
    outputs stay whole. Summing float32 pieces is also a little more accurate than one
    long sum.
    """
    m, k = a.shape
    n = b.shape[1]
    if is_cupy(xp) or m * n > _TINY_OUTPUT or m * n * k <= _SMALL_PRODUCT:
        return a @ b
    piece = _SMALL_PRODUCT // (m * n)
    total = a[:, :piece] @ b[:piece]
    for start in range(piece, k, piece):
        total += a[:, start : start + piece] @ b[start : start + piece]
    return total


def pool_windows(x: Any, pool: tuple[int, int], stride: tuple[int, int]) -> list[Any]:
    """The kh*kw strided views of x (N, C, H, W) that together hold every pooling window.

    View k = (i, j) (row-major over the window) is (N, C, Ho, Wo) with
    view[n, c, h, w] = x[n, c, h*sh + i, w*sw + j], so a pool over the window is an
    element-wise max or sum over the views. When the windows tile the input (stride equal
    to the pool size) each pixel lies in at most one view; otherwise views overlap.
    """
    kh, kw = pool
    sh, sw = stride
    _, _, h, w = x.shape
    ho = conv_output_size(h, kh, sh, 0)
    wo = conv_output_size(w, kw, sw, 0)
    return [
        x[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
