"""BatchNorm2D: per-channel batch normalisation of NCHW batches."""

from __future__ import annotations

import attrs

from .. import cuda_kernels
from ..backend import is_cupy
from ..checks import in_range
from ..precision import accumulation_dtype
from .base import (
    ShapeError,
    check_entries,
    check_input,
    check_input_dtype,
    check_keys,
    register_layer,
    require_image_shape,
)

_check_momentum = in_range("BatchNorm2D", low=0.0, high=1.0)
_check_eps = in_range("BatchNorm2D", low=0.0, low_open=True)


def _in_dtype(a, dtype):
    """a cast to dtype, or a itself (no call into the array module) when it has it."""
    return a if a.dtype == dtype else a.astype(dtype)


@register_layer
@attrs.frozen
class BatchNorm2D:
    """Normalise each channel over (N, H, W), then scale and shift it.

    Shapes: x (N, C, H, W) -> y (N, C, H, W); params gamma, beta (C,); state
    running_mean, running_var (C,).

    Training   μ = mean(x), σ² = mean((x - μ)²) (biased) over the M = N*H*W values of a
               channel;  x̂ = (x - μ) / √(σ² + eps),  y = γ x̂ + β.
               running = momentum * running + (1 - momentum) * batch, where the batch
               variance put into running_var is the unbiased σ² M / (M - 1), as PyTorch
               does. (PyTorch's `momentum` is the weight of the batch: torch = 1 - ours.)
               M must be at least 2 (ShapeError otherwise, as in PyTorch).
    Inference  x̂ = (x - running_mean) / √(running_var + eps).
    Backward   dγ = Σ dy x̂,  dβ = Σ dy,  dx = γ / √(σ² + eps) (dy - dβ/M - x̂ dγ/M).
    """

    momentum: float = attrs.field(default=0.9, converter=float, validator=_check_momentum)
    eps: float = attrs.field(default=1e-5, converter=float, validator=_check_eps)

    def output_shape(self, input_shape):
        """(C, H, W) -> (C, H, W)."""
        require_image_shape(self, input_shape)
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        """gamma ones (C,), beta zeros (C,); state running_mean zeros, running_var ones."""
        self.output_shape(input_shape)
        channels = input_shape[0]
        params = {"gamma": xp.ones((channels,), dtype), "beta": xp.zeros((channels,), dtype)}
        state = {
            "running_mean": xp.zeros((channels,), dtype),
            "running_var": xp.ones((channels,), dtype),
        }
        return params, state

    def _check_shapes(self, params, state, x) -> None:
        """ShapeError unless x is (N, C, H, W) and gamma, beta and the running statistics
        are (C,).

        C is the one gamma and beta agree on (an input with other channels is then the
        input's mistake), or the input's where they disagree (then the one that differs
        from it is named).
        """
        check_keys(self, "parameter", params, {"gamma", "beta"})
        gamma, beta = params["gamma"], params["beta"]
        agreed = gamma.shape[0] if gamma.shape == beta.shape and gamma.ndim == 1 else None
        check_input(self, x, (agreed, None, None))
        channels = x.shape[1]
        check_entries(self, "parameter", params, {"gamma": (channels,), "beta": (channels,)})
        statistics = {"running_mean": (channels,), "running_var": (channels,)}
        check_entries(self, "state entry", state, statistics)

    def apply(self, params, state, x, *, training, rng, xp):
        """y = γ (x - μ) / √(σ² + eps) + β per channel, x and y (N, C, H, W).

        Training uses the batch's μ, σ² and updates the running statistics; inference
        uses the running statistics. The cache is (x̂, 1/√(σ² + eps)).
        """
        self._check_shapes(params, state, x)
        gamma, beta = params["gamma"], params["beta"]  # (C,)
        check_input_dtype(self, x, "gamma", gamma)
        dtype = x.dtype.type
        axes = (0, 2, 3)
        if not training:
            inv_std = 1 / xp.sqrt(state["running_var"] + dtype(self.eps))  # (C,)
            scale = (gamma * inv_std)[:, None, None]
            shift = (beta - state["running_mean"] * gamma * inv_std)[:, None, None]
            return x * scale + shift, state, None
        n, _, h, w = x.shape
        count = n * h * w  # M values per channel
        if count < 2:  # the variance of one value is 0: y = β, no gradient, running_var -> 0
            raise ShapeError(
                f"{self!r}: expected more than 1 value per channel when training, got an "
                f"input of shape {tuple(x.shape)}"
            )
        acc = accumulation_dtype(x.dtype)  # float32 sums for float16 inputs, else x.dtype
        mean = x.mean(axis=axes, dtype=acc).astype(x.dtype, copy=False)  # (C,)
        centered = x - mean[:, None, None]
        # σ² (C,) stays in acc: in float16 a value 256 from the mean squares to inf, and a
        # variance above 65504 is inf itself
        var = xp.square(centered, dtype=acc).mean(axis=axes, dtype=acc)
        running_mean, running_var = state["running_mean"], state["running_var"]  # (C,)
        # 1/√(σ² + eps) is computed in acc and rounded to x's dtype once; the running
        # statistics are updated in their own dtype (float32 in mixed precision, else x's).
        stat = running_mean.dtype.type
        m, bessel = stat(self.momentum), stat(count / (count - 1))
        eps = acc.type(self.eps)
        if is_cupy(xp) and cuda_kernels.batchnorm_kernels_take(x):
            inv_std, running_mean, running_var = cuda_kernels.batchnorm_statistics(
                mean, var, running_mean, running_var, momentum=m, bessel=bessel, eps=eps
            )  # one kernel
        else:
            inv_std = _in_dtype(1 / xp.sqrt(var + eps), dtype)  # (C,)
            mean_, var_ = _in_dtype(mean, stat), _in_dtype(var, stat)
            running_mean = m * running_mean + (1 - m) * mean_
            running_var = m * running_var + (1 - m) * (var_ * bessel)  # unbiased variance
        per_channel = inv_std[:, None, None], gamma[:, None, None], beta[:, None, None]
        if is_cupy(xp) and cuda_kernels.batchnorm_kernels_take(x):  # one kernel
            x_hat, y = cuda_kernels.batchnorm_forward(centered, *per_channel)
        else:
            x_hat = centered * per_channel[0]  # (N, C, H, W)
            y = x_hat * per_channel[1] + per_channel[2]
        new_state = {"running_mean": running_mean, "running_var": running_var}
        return y, new_state, (x_hat, inv_std)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """dγ = Σ dy x̂, dβ = Σ dy (C,); dx = γ/√(σ²+eps) (dy - mean(dy) - x̂ mean(dy x̂)).

        The per-channel means are taken in the accumulation dtype: in float16 the count
        M = N*H*W itself overflows past 65504 (a 512 x 28 x 28 batch has 401,408).
        """
        x_hat, inv_std = cache
        axes = (0, 2, 3)
        acc = accumulation_dtype(dy.dtype)  # float32 sums for float16, else dy.dtype
        dgamma = (dy * x_hat).sum(axis=axes, dtype=acc)  # (C,), in acc
        dbeta = dy.sum(axis=axes, dtype=acc)  # (C,), in acc
        grads = {
            "gamma": dgamma.astype(dy.dtype, copy=False),
            "beta": dbeta.astype(dy.dtype, copy=False),
        }
        if not input_grad:
            return grads, None
        count = dy.size // dy.shape[1]  # M
        mean_dy = (dbeta / count).astype(dy.dtype, copy=False)  # (C,)
        mean_dy_x_hat = (dgamma / count).astype(dy.dtype, copy=False)  # (C,)
        per_channel = [a[:, None, None] for a in (params["gamma"], inv_std, mean_dy, mean_dy_x_hat)]
        if is_cupy(xp) and cuda_kernels.batchnorm_kernels_take(dy):  # one kernel
            return grads, cuda_kernels.batchnorm_input_grad(dy, x_hat, *per_channel)
        gamma, inv_std, mean_dy, mean_dy_x_hat = per_channel
        dx = gamma * inv_std * (dy - mean_dy - x_hat * mean_dy_x_hat)
        return grads, dx
