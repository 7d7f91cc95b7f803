"""Data augmentation on batches: random shifts, rotations and elastic distortion.

Every augmentation is a callable `augment(x, rng) -> x'` on a batch x (N, C, H, W) of the
array module x lives in (numpy or cupy), with `rng` a NumPy Generator (its draws advance
it) or a seed as `Dataset.batches` takes one (an int, a sequence of ints, a SeedSequence,
or None; the same int gives the same moves at every call). The random parameters (a few
numbers per sample) are drawn on the host from `rng`, so one seed gives the same
augmentation on the CPU and the GPU; the pixels are then moved by one vectorized gather
through `xp`, with no Python loop over samples or pixels.

`Dataset.batches` augments float32 batches (values 0..255). Integer batches, such as
`Dataset.images` (uint8), are interpolated in floating point (float32 up to 16-bit
integers, float64 beyond) and rounded to the nearest integer in their own dtype; the
result stays in range, as each output pixel is a weighted mean of input pixels and 0. One
image (C, H, W) is a batch of one: x[None].

All of them work the same way: each output pixel p reads the input at a source point
src(p), interpolated bilinearly from its four neighbours; points outside the image read 0
(the black background of MNIST). For an affine move about the image centre c,

    src(p) = c + R(-angle) (p - shift - c) / scale

which is what `random_affine` does in one gather (`random_shift` and `random_rotation`
are its special cases). `elastic` adds a smooth random displacement field instead
(Simard et al., 2003). `compose(a, b, ...)` applies several in turn.

    from convnet_data import augment
    aug = augment.random_affine(max_shift=2, max_degrees=10)
    for x, y in train.batches(64, seed=epoch, augment=aug): ...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from convnet_core import checks
from convnet_core.backend import get_array_module

from ._seeds import SeedLike, generator

__all__ = [
    "Compose",
    "Elastic",
    "RandomAffine",
    "compose",
    "elastic",
    "gaussian_matrix",
    "random_affine",
    "random_rotation",
    "random_shift",
    "sample_bilinear",
    "transform",
]

Augment = Callable[[Any, SeedLike], Any]


def _check_batch(x: Any, what: str) -> None:
    """Refuse what cannot be moved as a batch: anything but an integer or float array
    (N, C, H, W). `what` names the caller in the message."""
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(
            f"{what}: x must be a NumPy or CuPy array (N, C, H, W), got {type(x).__name__}"
        )
    if len(x.shape) != 4:
        raise ValueError(
            f"{what}: x must be a batch (N, C, H, W), got shape {tuple(x.shape)}; "
            "one image (C, H, W) is the batch x[None]"
        )
    if x.dtype.kind not in "iuf":
        raise TypeError(f"{what}: x must hold integers or floats, got {x.dtype}")


def _working_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype interpolation runs in: a float dtype itself; for integers float32 up to
    16 bits (which it holds exactly), float64 beyond (exact up to 2**53)."""
    return dtype if dtype.kind == "f" else np.result_type(dtype, np.float32)


def sample_bilinear(x, src_y, src_x):
    """x read at fractional points: out[n, c, i, j] = x[n, c, src_y[n, i, j], src_x[n, i, j]].

    x: (N, C, H, W); src_y, src_x: (N, H, W) source rows and columns in pixels. Each value
    mixes the four pixels around the point with bilinear weights; pixels outside the image
    count as 0. Returns (N, C, H, W) in x's dtype: integer x is interpolated in float
    (`_working_dtype`) and rounded to the nearest integer.
    """
    _check_batch(x, "sample_bilinear")
    xp = get_array_module(x)
    work = _working_dtype(x.dtype)
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w).astype(work, copy=False)
    y0 = xp.floor(src_y)
    x0 = xp.floor(src_x)
    wy = (src_y - y0).astype(work)  # (N, H, W) weight of the lower row, in [0, 1)
    wx = (src_x - x0).astype(work)
    y0 = y0.astype(xp.int64)
    x0 = x0.astype(xp.int64)
    samples = xp.arange(n)[:, None, None]  # (N, 1, 1)
    channels = xp.arange(c)[None, :, None]  # (1, C, 1)
    out = xp.zeros_like(flat)  # (N, C, H*W)
    for dy, dx, weight in (
        (0, 0, (1 - wy) * (1 - wx)),
        (0, 1, (1 - wy) * wx),
        (1, 0, wy * (1 - wx)),
        (1, 1, wy * wx),
    ):
        rows, cols = y0 + dy, x0 + dx  # (N, H, W)
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        where = (xp.clip(rows, 0, h - 1) * w + xp.clip(cols, 0, w - 1)).reshape(n, 1, h * w)
        weight = (weight * inside).reshape(n, 1, h * w)  # 0 for neighbours outside
        out += flat[samples, channels, where] * weight  # (N, C, H*W)
    out = out.reshape(n, c, h, w)
    if work != x.dtype:  # integers: a weighted mean of pixels and 0 stays in x's range
        out = xp.rint(out).astype(x.dtype)
    return out


def transform(x, angles, shifts, scales=None):
    """Rotate, scale and shift each image of x (N, C, H, W) about its centre.

    angles (N,) in degrees, counter-clockwise as displayed (rows downwards); shifts (N, 2)
    in pixels (rows, columns), positive moves the content down and right; scales (N,),
    > 1 enlarges. Host arrays. Output pixel p reads x at c + R(-angle)(p - shift - c)/scale.
    Returns (N, C, H, W) in x's dtype and module (integers rounded, as `sample_bilinear`).
    """
    _check_batch(x, "transform")
    xp = get_array_module(x)
    n, _, h, w = x.shape
    angles = np.radians(np.asarray(angles, dtype=np.float64).reshape(n))  # host
    shifts = np.asarray(shifts, dtype=np.float64).reshape(n, 2)  # host
    scales = np.ones(n) if scales is None else np.asarray(scales, dtype=np.float64)  # host
    cos = xp.asarray(np.cos(angles) / scales)[:, None, None]  # (N, 1, 1) # host
    sin = xp.asarray(np.sin(angles) / scales)[:, None, None]  # host
    shift_y = xp.asarray(shifts[:, 0])[:, None, None]
    shift_x = xp.asarray(shifts[:, 1])[:, None, None]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    rows = xp.arange(h, dtype=xp.float64)[None, :, None] - shift_y - cy  # (N, H, 1)
    cols = xp.arange(w, dtype=xp.float64)[None, None, :] - shift_x - cx  # (N, 1, W)
    src_y = cy + cos * rows + sin * cols  # (N, H, W)
    src_x = cx - sin * rows + cos * cols
    return sample_bilinear(x, src_y, src_x)


@dataclasses.dataclass(frozen=True)
class RandomAffine:
    """Random shift, rotation and scale per sample, applied in one gather.

    Shifts are whole pixels drawn uniformly in [-max_shift, max_shift] per axis (so a pure
    shift moves pixels exactly, with no blur), angles uniform in [-max_degrees,
    max_degrees], scales uniform in [1 - max_scale, 1 + max_scale]. Called as
    `aug(x, rng)`: x (N, C, H, W) of numpy or cupy -> the same shape, module and dtype.
    """

    max_shift: int = 2
    max_degrees: float = 10.0
    max_scale: float = 0.0

    def __post_init__(self) -> None:
        checks.count(self.max_shift, "RandomAffine: max_shift", minimum=0)
        checks.real(self.max_degrees, "RandomAffine: max_degrees", low=0)
        checks.real(self.max_scale, "RandomAffine: max_scale", low=0, high=1, high_open=True)

    def __call__(self, x, rng: SeedLike):
        """x (N, C, H, W) -> (N, C, H, W) in x's dtype and module; the N shifts (rows,
        columns), angles and scales are drawn on the host from `rng` (a Generator or a
        seed)."""
        _check_batch(x, "RandomAffine")
        rng = generator(rng, "RandomAffine: rng")
        n = x.shape[0]
        shifts = rng.integers(-self.max_shift, self.max_shift + 1, size=(n, 2))  # host
        angles = rng.uniform(-self.max_degrees, self.max_degrees, size=n)  # host
        scales = rng.uniform(1 - self.max_scale, 1 + self.max_scale, size=n)  # host
        return transform(x, angles, shifts, scales)


def random_shift(max_shift: int = 2) -> RandomAffine:
    """Shift each image by whole pixels, up to `max_shift` along each axis.

    The result is called as aug(x, rng): x (N, C, H, W) -> the same shape.
    """
    return RandomAffine(max_shift=max_shift, max_degrees=0.0)


def random_rotation(max_degrees: float = 10.0) -> RandomAffine:
    """Rotate each image about its centre by up to `max_degrees` either way.

    The result is called as aug(x, rng): x (N, C, H, W) -> the same shape.
    """
    return RandomAffine(max_shift=0, max_degrees=max_degrees)


def random_affine(max_shift: int = 2, max_degrees: float = 10.0, max_scale: float = 0.0):
    """Shift, rotate (and optionally scale) each image, in a single gather.

    The result is called as aug(x, rng): x (N, C, H, W) -> the same shape.
    """
    return RandomAffine(max_shift=max_shift, max_degrees=max_degrees, max_scale=max_scale)


def gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) matrix G with G @ v = v blurred by a Gaussian of std `sigma` (zero padded).

    G[i, j] = exp(-(i - j)^2 / (2 sigma^2)) / (sigma sqrt(2 pi)), so the blur of a field u
    (N, H, W) along both axes is G_H @ u @ G_W^T.
    """
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]  # host
    return np.exp(-(offsets**2) / (2.0 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))  # host


@dataclasses.dataclass(frozen=True)
class Elastic:
    """Elastic distortion (Simard, Steinkraus and Platt, 2003).

    Each sample gets a displacement field: uniform noise in [-1, 1] per pixel and axis,
    blurred by a Gaussian of std `sigma` and scaled by `alpha` (pixels). Output pixel p
    reads the input at p + displacement(p). For 28x28 digits sigma 4 to 6 and alpha 8 to
    34 keep the digit readable. Called as `aug(x, rng)`: x (N, C, H, W) -> the same shape,
    module and dtype.
    """

    alpha: float = 8.0
    sigma: float = 4.0

    def __post_init__(self) -> None:
        checks.real(self.alpha, "Elastic: alpha", low=0)
        checks.real(self.sigma, "Elastic: sigma", low=0, low_open=True)

    def __call__(self, x, rng: SeedLike):
        """x (N, C, H, W) -> (N, C, H, W) in x's dtype and module; one displacement field
        (2, N, H, W) is drawn on the host from `rng` (a Generator or a seed), shared by the
        C channels."""
        _check_batch(x, "Elastic")
        rng = generator(rng, "Elastic: rng")
        xp = get_array_module(x)
        n, _, h, w = x.shape
        noise = rng.uniform(-1.0, 1.0, size=(2, n, h, w))  # host
        blur_h = xp.asarray(gaussian_matrix(h, self.sigma) * self.alpha)  # (H, H)
        blur_w = xp.asarray(gaussian_matrix(w, self.sigma))  # (W, W)
        field = blur_h @ xp.asarray(noise) @ blur_w.T  # (2, N, H, W) pixels
        rows = xp.arange(h, dtype=xp.float64)[None, :, None]  # (1, H, 1)
        cols = xp.arange(w, dtype=xp.float64)[None, None, :]  # (1, 1, W)
        return sample_bilinear(x, rows + field[0], cols + field[1])


def elastic(alpha: float = 8.0, sigma: float = 4.0) -> Elastic:
    """Elastic distortion with strength `alpha` (pixels) and smoothness `sigma` (pixels).

    The result is called as aug(x, rng): x (N, C, H, W) -> the same shape.
    """
    return Elastic(alpha=alpha, sigma=sigma)


@dataclasses.dataclass(frozen=True)
class Compose:
    """Several augmentations applied in turn, each drawing from the same Generator."""

    steps: tuple

    def __call__(self, x, rng: SeedLike):
        """x (N, C, H, W) -> each step applied in order; `rng` (a seed made into one
        Generator first) passed to each in turn."""
        rng = generator(rng, "Compose: rng")
        for step in self.steps:
            x = step(x, rng)
        return x


def compose(*steps: Augment) -> Compose:
    """An augmentation applying `steps` one after another."""
    return Compose(tuple(steps))
