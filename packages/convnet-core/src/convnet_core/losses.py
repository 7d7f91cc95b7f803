"""Loss functions. Each returns `(value, grad)`: the mean loss over the batch (a 0-d array of
`xp`, so nothing is copied to the host) and its gradient with respect to the prediction,
shaped like the predictions. `value_and_grad` calls any loss (a user's too) and checks
that shape, as `fit` and the custom-loop `Model.loss` do.
"""

from __future__ import annotations

from typing import Any

from . import cuda_kernels
from .backend import is_cupy

__all__ = [
    "LOSSES",
    "huber",
    "log_softmax",
    "mse",
    "one_hot",
    "softmax_cross_entropy",
    "softmax_cross_entropy_unfused",
    "value_and_grad",
]


def one_hot(labels: Any, num_classes: int, *, xp: Any, dtype: Any = "float32") -> Any:
    """Integer labels (N,) -> one-hot rows (N, num_classes)."""
    labels = xp.asarray(labels)
    out = xp.zeros((labels.shape[0], num_classes), dtype=dtype)
    out[xp.arange(labels.shape[0]), labels] = 1
    return out


def log_softmax(logits: Any, *, xp: Any) -> Any:
    """log softmax over the last axis, stable for any logits: z - max - log Σ exp(z - max).

    logits (..., classes), e.g. (N, classes) -> log-probabilities of the same shape, each
    row's exponentials summing to 1.
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def _targets_as_one_hot(labels: Any, logits: Any, xp: Any) -> Any:
    labels = xp.asarray(labels)
    n, classes = logits.shape
    if labels.ndim == 2:
        if labels.shape != logits.shape:
            raise ValueError(
                f"one-hot labels of shape {tuple(labels.shape)} do not match logits {(n, classes)}"
            )
        return labels.astype(logits.dtype, copy=False)
    if labels.shape != (n,):
        raise ValueError(
            f"labels must be (N,) integers or (N, classes) one-hot; got {tuple(labels.shape)} "
            f"for logits {(n, classes)}"
        )
    return one_hot(labels, classes, xp=xp, dtype=logits.dtype)


def softmax_cross_entropy(logits: Any, labels: Any, *, xp: Any) -> tuple[Any, Any]:
    """Cross-entropy of softmax(logits) against labels, averaged over the batch.

    Args:
        logits: (N, classes) raw scores (no softmax applied).
        labels: (N,) integer classes or (N, classes) one-hot (or soft) targets.

    Returns:
        (loss, dlogits) with loss = -1/N Σₙ Σₖ tₙₖ log softmax(zₙ)ₖ and
        dlogits = (softmax(z) - t) / N, shaped (N, classes).

    On CuPy, integer labels and float32/float64 logits take one fused kernel
    (`cuda_kernels.fused_softmax_cross_entropy`); elsewhere this is
    `softmax_cross_entropy_unfused`.
    """
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy expects logits (N, classes), got {logits.shape}")
    labels = xp.asarray(labels)
    if is_cupy(xp) and _fused_on_gpu(logits, labels):  # one kernel instead of about sixteen
        return cuda_kernels.fused_softmax_cross_entropy(logits, labels)
    return softmax_cross_entropy_unfused(logits, labels, xp=xp)


def softmax_cross_entropy_unfused(logits: Any, labels: Any, *, xp: Any) -> tuple[Any, Any]:
    """`softmax_cross_entropy` in array operations on any `xp`: one-hot targets (N,
    classes), log-softmax, then the loss and gradient. The reference of the fused kernel."""
    targets = _targets_as_one_hot(labels, logits, xp)
    log_probs = log_softmax(logits, xp=xp)  # (N, classes)
    n = logits.shape[0]
    loss = -(targets * log_probs).sum() / n
    dlogits = (xp.exp(log_probs) - targets) / logits.dtype.type(n)
    return loss, dlogits


def _fused_on_gpu(logits: Any, labels: Any) -> bool:
    """Whether cuda_kernels.fused_softmax_cross_entropy takes these: integer labels (N,)
    and float32/float64 logits, unless cuda_kernels.SOFTMAX_XENT_ON_GPU says "arrays"."""
    return (
        cuda_kernels.SOFTMAX_XENT_ON_GPU == "kernel"
        and labels.shape == logits.shape[:1]
        and labels.dtype.kind in "iu"
        and logits.dtype.name in cuda_kernels.SOFTMAX_XENT_TYPES
    )


def mse(predictions: Any, targets: Any, *, xp: Any) -> tuple[Any, Any]:
    """Mean squared error over every element: mean((p - t)²); grad 2 (p - t) / size.

    predictions (N, ...) and targets of the same shape (converted to the predictions'
    dtype). Returns (loss, dpredictions): a 0-d array and an array shaped like
    `predictions`.
    """
    targets = xp.asarray(targets, dtype=predictions.dtype)
    if targets.shape != predictions.shape:
        raise ValueError(
            f"mse: targets {targets.shape} do not match predictions {predictions.shape}"
        )
    diff = predictions - targets
    return (diff * diff).mean(), diff * predictions.dtype.type(2.0 / diff.size)


def huber(predictions: Any, targets: Any, *, xp: Any, delta: float = 1.0) -> tuple[Any, Any]:
    """Huber loss, the mean over every element of ½d² for |d| ≤ δ, δ(|d| - ½δ) beyond.

    Quadratic near zero, linear for outliers; the gradient is d clipped to [-δ, δ] / size.

    predictions (N, ...) and targets of the same shape, d = predictions - targets. Returns
    (loss, dpredictions): a 0-d array and an array shaped like `predictions`, both in the
    predictions' dtype.
    """
    targets = xp.asarray(targets, dtype=predictions.dtype)
    if targets.shape != predictions.shape:
        raise ValueError(
            f"huber: targets {targets.shape} do not match predictions {predictions.shape}"
        )
    diff = predictions - targets
    abs_diff = xp.abs(diff)
    small = abs_diff <= delta
    per_element = xp.where(small, 0.5 * diff * diff, delta * (abs_diff - 0.5 * delta))
    grad = xp.clip(diff, -delta, delta) / predictions.dtype.type(diff.size)
    return per_element.mean().astype(predictions.dtype), grad.astype(predictions.dtype)


def value_and_grad(
    loss_fn: Any, predictions: Any, targets: Any, *, xp: Any, name: str | None = None
) -> tuple[Any, Any]:
    """`loss_fn(predictions, targets, xp=xp)`, with the shape of its gradient checked.

    A loss returns (value, dLoss/dpredictions), the gradient shaped like `predictions`
    (N, *output_shape). One of another shape, which the backward pass would broadcast
    into wrong numbers, is a ValueError naming the loss (`name`, else the function's
    name) and both shapes. The check compares shapes on the host; no value is read.
    """
    value, grad = loss_fn(predictions, targets, xp=xp)
    want, got = tuple(predictions.shape), tuple(getattr(grad, "shape", ()))
    if got != want:
        name = name or getattr(loss_fn, "__name__", repr(loss_fn))
        raise ValueError(
            f"loss {name!r} returned a gradient of shape {got} for predictions of shape "
            f"{want}; the gradient of a loss must have the predictions' shape"
        )
    return value, grad


LOSSES = {
    "categorical_crossentropy": softmax_cross_entropy,
    "cce": softmax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
    "mse": mse,
    "huber": huber,
}
