"""Activation: an element-wise (or, for softmax, per-row) non-linearity without parameters."""

from __future__ import annotations

import math

import attrs

from .. import cuda_kernels
from ..backend import is_cupy
from ..checks import in_range
from .base import register_layer

_GELU_C = math.sqrt(2.0 / math.pi)


def _relu(x, xp, alpha):
    if is_cupy(xp) and x.dtype.kind == "f":  # one kernel (cuda_kernels.relu_forward_reference)
        return cuda_kernels.fused_relu_forward(x)
    return xp.maximum(x, 0)


def _relu_kept(x, y, xp):
    if is_cupy(xp):  # the fused backward kernel reads y
        return y
    # ReLU'(x) is 1 where the output is positive, else 0: a 1-byte mask is all the backward
    # pass needs, a quarter of y's memory (and fewer fresh pages for NumPy in each step)
    return y > 0


def _relu_grad(positive, dy, xp, alpha):
    if not is_cupy(xp):
        return dy * positive
    if positive.dtype == dy.dtype:  # one kernel instead of three, on the kept y
        return cuda_kernels.fused_relu_backward(positive, dy)
    # y of an integer input (uint8 images), dy a float: the kernel takes one dtype
    return cuda_kernels.relu_backward_reference(positive, dy, xp=xp)


def _leaky_relu(x, xp, alpha):
    return xp.where(x > 0, x, x * x.dtype.type(alpha))


def _leaky_relu_grad(x, dy, xp, alpha):
    return xp.where(x > 0, dy, dy * dy.dtype.type(alpha))


def _sigmoid(x, xp, alpha):
    # 1 / (1 + e^-x) written via tanh so it never overflows: σ(x) = (1 + tanh(x/2)) / 2
    half = x.dtype.type(0.5)
    return half * (xp.tanh(half * x) + 1)


def _sigmoid_grad(y, dy, xp, alpha):
    return dy * y * (1 - y)  # σ' = σ (1 - σ)


def _tanh(x, xp, alpha):
    return xp.tanh(x)


def _tanh_grad(y, dy, xp, alpha):
    return dy * (1 - y * y)  # tanh' = 1 - tanh²


def _softmax(x, xp, alpha):
    shifted = x - x.max(axis=-1, keepdims=True)  # subtracting the max keeps exp finite
    e = xp.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_grad(y, dy, xp, alpha):
    # Jacobian-vector product of softmax: dx_i = y_i (dy_i - Σ_j dy_j y_j)
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def _gelu(x, xp, alpha):
    # The tanh approximation (PyTorch's GELU(approximate="tanh")):
    # gelu(x) = x/2 (1 + tanh(√(2/π) (x + 0.044715 x³)))
    c = x.dtype.type(_GELU_C)
    return x.dtype.type(0.5) * x * (1 + xp.tanh(c * (x + x.dtype.type(0.044715) * x**3)))


def _gelu_grad(x, dy, xp, alpha):
    c = x.dtype.type(_GELU_C)
    k = x.dtype.type(0.044715)
    t = xp.tanh(c * (x + k * x**3))
    dt = (1 - t * t) * c * (1 + 3 * k * x * x)  # d tanh(u)/dx
    half = x.dtype.type(0.5)
    return dy * (half * (1 + t) + half * x * dt)


def _keep_x(x, y, xp):
    return x


def _keep_y(x, y, xp):
    return y


# name -> (forward, backward, kept):
#   forward(x, xp, alpha) -> y;  kept(x, y, xp) -> what the backward pass needs, cached;
#   backward(kept, dy, xp, alpha) -> dx
ACTIVATIONS = {
    "relu": (_relu, _relu_grad, _relu_kept),
    "leaky_relu": (_leaky_relu, _leaky_relu_grad, _keep_x),
    "sigmoid": (_sigmoid, _sigmoid_grad, _keep_y),
    "tanh": (_tanh, _tanh_grad, _keep_y),
    "softmax": (_softmax, _softmax_grad, _keep_y),
    "gelu": (_gelu, _gelu_grad, _keep_x),
}


def _check_name(_instance, _attribute, value):
    if value not in ACTIVATIONS:
        valid = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {value!r}; valid names: {valid}")


@register_layer
@attrs.frozen(init=False)
class Activation:
    """An activation function applied to the whole input.

    Names: relu, leaky_relu (slope `alpha` for x < 0), sigmoid, tanh, softmax (over the
    last axis) and gelu (tanh approximation). Shapes: any (N, ...) -> the same.
    `Activation(func="relu")`, ConvNet-NumPy's spelling, is `Activation("relu")`.
    """

    name: str = attrs.field(validator=_check_name)
    alpha: float = attrs.field(default=0.01, validator=in_range("Activation"))

    def __init__(self, name: str | None = None, alpha: float = 0.01, *, func: str | None = None):
        if func is not None:
            if name is not None:
                raise TypeError(
                    f"Activation takes name or func (ConvNet-NumPy's name for it), not both: "
                    f"got name={name!r} and func={func!r}"
                )
            name = func
        if name is None:
            raise TypeError("Activation needs the function's name, e.g. Activation('relu')")
        self.__attrs_init__(name, alpha)

    def output_shape(self, input_shape):
        """Any shape -> the same."""
        return tuple(input_shape)

    def init(self, input_shape, rng, *, xp, dtype):
        """No parameters and no state."""
        return {}, {}

    def apply(self, params, state, x, *, training, rng, xp):
        """y = f(x) element-wise (softmax: per row), same shape; caches what f' needs."""
        forward, _, kept = ACTIVATIONS[self.name]
        y = forward(x, xp, self.alpha)
        return y, state, (kept(x, y, xp) if training else None)

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """dx = f'(x) ⊙ dy (softmax: its Jacobian-vector product), same shape as dy."""
        _, backward, _ = ACTIVATIONS[self.name]
        return {}, (backward(cache, dy, xp, self.alpha) if input_grad else None)
